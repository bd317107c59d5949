//! The conformance suite on the in-memory backend.

pynenc_testkit::conformance_tests!(pynenc_testkit::MemoryFactory::new());

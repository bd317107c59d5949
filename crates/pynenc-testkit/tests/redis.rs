//! The conformance suite on the Redis backend: each test starts its own
//! `redis-server` on a free port (skipped, with a message, when it is not
//! installed; a failure with `PYNENC_REQUIRE_REDIS=1`).
#![cfg(feature = "redis")]

pynenc_testkit::conformance_tests!(pynenc_testkit::RedisFactory::new());

//! The Redis backend for the conformance suite: a fresh `redis-server` per
//! factory (see [`pynenc_testservers::redis`]).

use pynenc::{Pynenc, PynencBuilder};
pub use pynenc_testservers::redis::*;

use crate::BackendFactory;

/// Apps on a fresh `redis-server` (one per factory, so every conformance
/// test gets its own server).
pub struct RedisFactory {
    server: Option<RedisServer>,
    skip: Option<String>,
}

impl Default for RedisFactory {
    fn default() -> Self {
        RedisFactory::new()
    }
}

impl RedisFactory {
    /// Starts a fresh server (or records why Redis tests are skipped).
    pub fn new() -> Self {
        RedisFactory::with_options(RedisServerOptions::default())
    }

    /// Starts a fresh server with `options` (or records why Redis tests are
    /// skipped).
    pub fn with_options(options: RedisServerOptions) -> Self {
        match skip_reason() {
            Some(reason) => RedisFactory {
                server: None,
                skip: Some(reason),
            },
            None => RedisFactory {
                server: Some(RedisServer::start_with(options)),
                skip: None,
            },
        }
    }

    /// Why Redis tests are skipped here, if they are.
    pub fn skip_reason(&self) -> Option<String> {
        self.skip.clone()
    }

    /// The server (`None` when skipped).
    pub fn server(&self) -> Option<&RedisServer> {
        self.server.as_ref()
    }

    /// The server, mutably (to restart it).
    pub fn server_mut(&mut self) -> Option<&mut RedisServer> {
        self.server.as_mut()
    }

    /// The server's URL. Panics when skipped.
    pub fn url(&self) -> String {
        match &self.server {
            Some(s) => s.url(),
            None => panic!("{}", self.skip.clone().unwrap_or_default()),
        }
    }
}

impl BackendFactory for RedisFactory {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn builder(&self, app_id: &str) -> PynencBuilder {
        Pynenc::builder()
            .env_vars(Vec::new())
            .app_id(app_id)
            .config_value("backend", "redis")
            .config_value("redis.redis_url", self.url())
    }

    fn skip_reason(&self) -> Option<String> {
        self.skip.clone()
    }

    fn stored_bytes(&self) -> Option<u64> {
        let reply = self.server()?.command(&["INFO", "memory"]).ok()?;
        let pynenc_testservers::redis::Resp::Bulk(Some(text)) = reply else {
            return None;
        };
        String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

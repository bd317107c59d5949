//! The data of workflows: a hash `wfd:{id}` per workflow invocation,
//! written by the `wfput` step of `small.lua` (which checks that the
//! invocation exists and flags it, so the purge deletes the hash with it).

use async_trait::async_trait;
use pynenc_model::InvocationId;
use pynenc_store::{Result, WorkflowData};

use crate::backend::{bytes, RedisBackend};
use crate::script::{as_string, scripts};

#[async_trait]
impl WorkflowData for RedisBackend {
    async fn put_workflow_data(
        &self,
        id: &InvocationId,
        key: &str,
        value: &str,
        if_absent: bool,
    ) -> Result<String> {
        let args = [
            bytes("wfput"),
            bytes(id.as_str()),
            bytes(key),
            bytes(value),
            bytes(if if_absent { "1" } else { "0" }),
        ];
        let v = self.script(&scripts().small, &args).await?;
        Ok(as_string(&v).unwrap_or_else(|| value.to_string()))
    }

    async fn workflow_data(&self, id: &InvocationId, key: &str) -> Result<Option<String>> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGET").arg(self.key("wfd", id.as_str())).arg(key);
        let (value,): (Option<String>,) = self.query("HGET wfd", &pipe).await?;
        Ok(value)
    }
}

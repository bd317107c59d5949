//! [`ConfigLoader`]: where the layers are read from, and in which order.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::layers::Layer;
use super::{ConfigError, PynencConfig, ENV_PREFIX, FILEPATH_ENV_VAR, PROJECT_FILE_NAME};

/// Builds a [`PynencConfig`] from every layer.
///
/// ```no_run
/// # use pynenc::conf::ConfigLoader;
/// let config = ConfigLoader::new()
///     .file("pynenc.yaml")
///     .value("app_id", "billing")
///     .value("task.my_crate::jobs::add.max_retries", 3)
///     .load()?;
/// # Ok::<(), pynenc::exceptions::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    files: Vec<PathBuf>,
    values: Vec<(String, Value)>,
    env: Option<Vec<(String, String)>>,
    project_dir: Option<PathBuf>,
}

impl ConfigLoader {
    /// A loader that, at [`ConfigLoader::load`], reads the process environment
    /// and `pynenc.toml` in the current directory.
    pub fn new() -> Self {
        ConfigLoader::default()
    }

    /// Adds a configuration file (`.toml`, `.yaml`, `.yml` or `.json`): the
    /// "file given in code" layer. Several files are applied in the order given.
    /// A missing or unreadable file is an error at load.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Sets a value in code (the highest layer). `key` is `field`,
    /// `section.field` or `task.<task id>.<option>`; later calls win.
    pub fn value(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.values.push((key.to_string(), value.into()));
        self
    }

    /// Uses these variables instead of the process environment (for tests
    /// and embedding); only `PYNENC__*` variables are read.
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = Some(vars.into_iter().collect());
        self
    }

    /// Where `pynenc.toml` is looked for (default: the current directory).
    pub fn project_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.project_dir = Some(dir.into());
        self
    }

    /// Applies every layer and checks the result.
    pub fn load(self) -> Result<PynencConfig, ConfigError> {
        let env: Vec<(String, String)> = match self.env {
            Some(vars) => vars,
            None => std::env::vars_os()
                .filter_map(|(k, v)| {
                    let k = k.into_string().ok()?;
                    k.starts_with(ENV_PREFIX)
                        .then(|| (k, v.to_string_lossy().into_owned()))
                })
                .collect(),
        };
        let mut config = PynencConfig::default();

        let project_dir = self.project_dir.or_else(|| std::env::current_dir().ok());
        if let Some(dir) = project_dir {
            let path = dir.join(PROJECT_FILE_NAME);
            if path.is_file() {
                config.apply(Layer::from_file(&path, "project file")?)?;
            }
        }
        for path in &self.files {
            config.apply(Layer::from_file(path, "given in code")?)?;
        }
        let filepath = env
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(FILEPATH_ENV_VAR))
            .map(|(_, v)| v.trim())
            .next_back();
        if let Some(path) = filepath.filter(|p| !p.is_empty()) {
            config.apply(Layer::from_file(
                Path::new(path),
                &format!("named by environment variable {FILEPATH_ENV_VAR}"),
            )?)?;
        }
        config.apply(Layer::from_env(&env)?)?;
        config.apply(Layer::from_code(&self.values)?)?;
        config.finish()?;
        Ok(config)
    }
}

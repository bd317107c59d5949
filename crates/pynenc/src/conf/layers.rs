//! The layers of a configuration: a file's tree, the environment, values
//! set in code — each read into the settings it gives, every one with its
//! source.

use std::path::Path;

use serde_json::Value;

use super::table::{
    ambiguous_reason, find_field, find_top_level, unknown_key_reason, unknown_section_reason,
    ConfigField, TopLevelMiss, SECTIONS,
};
use super::tasks::normalize_task_id;
use super::value::{expected, json_got, RawValue};
use super::{ConfigError, ConfigSource, ENV_PREFIX, FILE_KEY, TASK_SECTION};

/// One field value given by a layer.
#[derive(Debug)]
pub(crate) struct Setting {
    pub(crate) field: &'static ConfigField,
    /// Given at the top level for a section field: loses to the section value.
    pub(crate) top_level: bool,
    pub(crate) value: RawValue,
    pub(crate) source: ConfigSource,
}

/// One task option given by a layer.
#[derive(Debug)]
pub(crate) struct TaskSetting {
    /// The task id as written (`.` read as `::`), or its shell-safe form.
    pub(crate) task_id: String,
    pub(crate) option: String,
    pub(crate) value: RawValue,
    pub(crate) source: ConfigSource,
}

/// Everything one layer gives.
#[derive(Debug, Default)]
pub(crate) struct Layer {
    pub(crate) settings: Vec<Setting>,
    pub(crate) tasks: Vec<TaskSetting>,
}

/// The setting of a top-level key `name`: a global field, or the field of
/// that name in the one section that has it.
pub(crate) fn top_level_setting(
    name: &str,
    value: RawValue,
    source: &ConfigSource,
) -> Result<Setting, ConfigError> {
    match find_top_level(name) {
        Ok(field) => Ok(Setting {
            field,
            top_level: !field.section.is_empty(),
            value,
            source: source.clone(),
        }),
        Err(TopLevelMiss::Ambiguous(sections)) => Err(config_error(
            source,
            name,
            ambiguous_reason(name, &sections),
        )),
        Err(TopLevelMiss::Unknown) => Err(config_error(source, name, unknown_key_reason(""))),
    }
}

/// The setting of `section.name`, in a known section.
pub(crate) fn section_setting(
    section: &str,
    name: &str,
    value: RawValue,
    source: &ConfigSource,
) -> Result<Setting, ConfigError> {
    match find_field(section, name) {
        Some(field) => Ok(Setting {
            field,
            top_level: false,
            value,
            source: source.clone(),
        }),
        None => Err(config_error(
            source,
            format!("{section}.{name}"),
            unknown_key_reason(section),
        )),
    }
}

pub(crate) fn config_error(
    source: &ConfigSource,
    key: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::new(source.clone(), key, reason)
}

impl Layer {
    /// A layer from a file's (or code's) tree.
    pub(crate) fn from_tree(tree: &Value, source: &ConfigSource) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        let root = match tree {
            Value::Null => return Ok(layer),
            Value::Object(map) => map,
            other => {
                return Err(config_error(
                    source,
                    FILE_KEY,
                    expected("a table of settings at the top level", json_got(other)),
                ))
            }
        };
        for (key, value) in root {
            let lkey = key.to_ascii_lowercase();
            if lkey == TASK_SECTION {
                let tasks = value.as_object().ok_or_else(|| {
                    config_error(
                        source,
                        TASK_SECTION,
                        expected("a table of tasks (task id → options)", json_got(value)),
                    )
                })?;
                for (task_id, options) in tasks {
                    let task_id = normalize_task_id(task_id);
                    let options = options.as_object().ok_or_else(|| {
                        config_error(
                            source,
                            format!("{TASK_SECTION}.{task_id}"),
                            expected("a table of task options", json_got(options)),
                        )
                    })?;
                    for (option, v) in options {
                        layer.tasks.push(TaskSetting {
                            task_id: task_id.clone(),
                            option: option.to_ascii_lowercase(),
                            value: RawValue::Json(v.clone()),
                            source: source.clone(),
                        });
                    }
                }
            } else if SECTIONS.contains(&lkey.as_str()) {
                let fields = value.as_object().ok_or_else(|| {
                    config_error(
                        source,
                        lkey.as_str(),
                        expected(&format!("a table of [{lkey}] settings"), json_got(value)),
                    )
                })?;
                for (name, v) in fields {
                    let lname = name.to_ascii_lowercase();
                    let setting =
                        section_setting(&lkey, &lname, RawValue::Json(v.clone()), source)?;
                    layer.settings.push(setting);
                }
            } else {
                // a table under an unknown name reads as an unknown section
                if value.is_object() && matches!(find_top_level(&lkey), Err(TopLevelMiss::Unknown))
                {
                    return Err(config_error(
                        source,
                        lkey.as_str(),
                        unknown_section_reason(&lkey),
                    ));
                }
                let setting = top_level_setting(&lkey, RawValue::Json(value.clone()), source)?;
                layer.settings.push(setting);
            }
        }
        Ok(layer)
    }

    /// A layer from a configuration file; `origin` says why it is read.
    pub(crate) fn from_file(path: &Path, origin: &str) -> Result<Layer, ConfigError> {
        let source = ConfigSource::File(path.display().to_string());
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if !matches!(ext.as_str(), "toml" | "yaml" | "yml" | "json") {
            return Err(config_error(
                &source,
                FILE_KEY,
                format!(
                    "unsupported configuration file type ({origin}): expected a .toml, .yaml, .yml or .json file"
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            config_error(
                &source,
                FILE_KEY,
                format!("cannot read the configuration file ({origin}): {e}"),
            )
            .caused_by(e)
        })?;
        let format = if ext == "yml" { "yaml" } else { ext.as_str() };
        let parse_error = |e: &dyn std::fmt::Display| {
            config_error(
                &source,
                FILE_KEY,
                format!(
                    "cannot parse the {format} file ({origin}): {}",
                    e.to_string().trim_end()
                ),
            )
        };
        let tree = match ext.as_str() {
            "toml" => toml::from_str::<Value>(&text).map_err(|e| parse_error(&e).caused_by(e))?,
            "json" => {
                serde_json::from_str::<Value>(&text).map_err(|e| parse_error(&e).caused_by(e))?
            }
            _ => serde_yaml::from_str::<Value>(&text).map_err(|e| parse_error(&e).caused_by(e))?,
        };
        Layer::from_tree(&tree, &source)
    }

    /// A layer from `PYNENC__*` environment variables (others are ignored).
    pub(crate) fn from_env(vars: &[(String, String)]) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        let mut vars: Vec<&(String, String)> = vars
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (name, value) in vars {
            let rest = &name[ENV_PREFIX.len()..];
            if rest.eq_ignore_ascii_case("FILEPATH") {
                continue;
            }
            let source = ConfigSource::Env(name.clone());
            let task_prefix = "TASK__";
            if rest.len() > task_prefix.len()
                && rest[..task_prefix.len()].eq_ignore_ascii_case(task_prefix)
            {
                let spec = &rest[task_prefix.len()..];
                match spec.rsplit_once("__") {
                    Some((task_id, option)) if !task_id.is_empty() && !option.is_empty() => {
                        layer.tasks.push(TaskSetting {
                            task_id: normalize_task_id(task_id),
                            option: option.to_ascii_lowercase(),
                            value: RawValue::Env(value.clone()),
                            source,
                        });
                    }
                    _ => {
                        return Err(config_error(
                            &source,
                            format!("{TASK_SECTION}.{spec}"),
                            format!(
                                "a task option is set as {ENV_PREFIX}TASK__<task id>__<OPTION>, the task id written with `__` for `::` (e.g. {ENV_PREFIX}TASK__MY_CRATE__JOBS__ADD__MAX_RETRIES)"
                            ),
                        ))
                    }
                }
                continue;
            }
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let setting = match parts.as_slice() {
                [name] => top_level_setting(name, RawValue::Env(value.clone()), &source)?,
                [section, name] if SECTIONS.contains(&section.as_str()) => {
                    section_setting(section, name, RawValue::Env(value.clone()), &source)?
                }
                [section, name] => {
                    return Err(config_error(
                        &source,
                        format!("{section}.{name}"),
                        unknown_section_reason(section),
                    ))
                }
                _ => {
                    return Err(config_error(
                        &source,
                        parts.join("."),
                        format!(
                            "unknown key: expected {ENV_PREFIX}<FIELD>, {ENV_PREFIX}<SECTION>__<FIELD> or {ENV_PREFIX}TASK__<task id>__<OPTION>"
                        ),
                    ))
                }
            };
            layer.settings.push(setting);
        }
        Ok(layer)
    }

    /// A layer from values set in code.
    pub(crate) fn from_code(values: &[(String, Value)]) -> Result<Layer, ConfigError> {
        let source = ConfigSource::Code;
        let mut layer = Layer::default();
        for (key, value) in values {
            let task_prefix = "task.";
            if key.len() > task_prefix.len()
                && key[..task_prefix.len()].eq_ignore_ascii_case(task_prefix)
            {
                let spec = &key[task_prefix.len()..];
                match spec.rsplit_once('.') {
                    Some((task_id, option)) if !task_id.is_empty() && !option.is_empty() => {
                        layer.tasks.push(TaskSetting {
                            task_id: normalize_task_id(task_id),
                            option: option.to_ascii_lowercase(),
                            value: RawValue::Json(value.clone()),
                            source: source.clone(),
                        });
                    }
                    _ => {
                        return Err(config_error(
                            &source,
                            key.as_str(),
                            "a task option is set as task.<task id>.<option>",
                        ))
                    }
                }
                continue;
            }
            let lkey = key.to_ascii_lowercase();
            let setting = match lkey.split_once('.') {
                Some((section, name)) if SECTIONS.contains(&section) => {
                    section_setting(section, name, RawValue::Json(value.clone()), &source)?
                }
                Some((section, _)) => {
                    return Err(config_error(
                        &source,
                        lkey.as_str(),
                        unknown_section_reason(section),
                    ))
                }
                None => top_level_setting(&lkey, RawValue::Json(value.clone()), &source)?,
            };
            layer.settings.push(setting);
        }
        Ok(layer)
    }
}

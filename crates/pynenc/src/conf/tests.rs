//! The configuration's layers, precedence, parsing, errors and per-task options.

use std::fs;
use std::path::{Path, PathBuf};

use pynenc_options::ConcurrencyControl;
use serde_json::Value;

use super::tasks::{apply_task_option, TaskOverrides};
use super::value::{mask_url, Raw};
use super::*;
use pynenc_model::ArgumentPrintMode;
use pynenc_model::Serializer;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A loader isolated from the process: empty environment, project dir `dir`.
fn loader(dir: &Path) -> ConfigLoader {
    ConfigLoader::new().project_dir(dir).env_vars(Vec::new())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

fn file_source(path: &Path) -> ConfigSource {
    ConfigSource::File(path.display().to_string())
}

fn env_source(var: &str) -> ConfigSource {
    ConfigSource::Env(var.to_string())
}

#[test]
fn defaults_have_default_sources() {
    let dir = tempfile::tempdir().unwrap();
    let config = loader(dir.path()).load().unwrap();
    assert_eq!(config, PynencConfig::default());
    assert_eq!(config.app_id, "pynenc");
    assert!(!config.dev_mode_force_sync_tasks);
    assert_eq!(config.serializer, Serializer::Json);
    assert_eq!(config.backend, BackendKind::Memory);
    assert_eq!(config.print_arguments, ArgumentPrintMode::Truncated(32));
    assert_eq!(config.truncate_arguments_length, 32);
    assert_eq!(config.max_argument_bytes, 536_870_912);
    assert!(config.orchestrator.cycle_control);
    assert!(config.orchestrator.blocking_control);
    assert_eq!(config.orchestrator.auto_final_invocation_purge_hours, 24.0);
    assert_eq!(config.orchestrator.auto_purge_interval_seconds, 60.0);
    assert_eq!(config.orchestrator.max_pending_seconds, 10.0);
    assert_eq!(config.runner.max_parallel_slots, 0);
    assert_eq!(config.runner.shutdown_grace_seconds, 5.0);
    assert_eq!(config.runner.heartbeat_interval_seconds, 0.5);
    assert_eq!(config.runner.runner_dead_after_seconds, 2.0);
    assert_eq!(config.runner.recovery_interval_seconds, 0.5);
    assert_eq!(config.runner.kind, RunnerKind::Thread);
    assert_eq!(config.runner.min_processes, 1);
    assert_eq!(config.runner.max_processes, 0);
    assert_eq!(config.sqlite.sqlite_path, "pynenc.db");
    assert_eq!(config.sqlite.busy_timeout_ms, 5000);
    assert_eq!(config.sqlite.poll_min_ms, 1);
    assert_eq!(config.sqlite.poll_max_ms, 50);
    assert_eq!(config.redis.redis_url, "");
    assert_eq!(config.redis.redis_host, "localhost");
    assert_eq!(config.redis.redis_port, 6379);
    assert_eq!(config.redis.redis_db, 0);
    assert_eq!(config.redis.redis_username, "");
    assert_eq!(config.redis.redis_password, "");
    assert_eq!(config.redis.redis_key_prefix, "__pynenc__");
    assert_eq!(config.redis.redis_pool_size, 4);
    for field in PynencConfig::fields() {
        assert_eq!(
            config.source_of(&field.key()),
            Some(&ConfigSource::Default),
            "{}",
            field.key()
        );
        assert!(!field.doc.trim().is_empty(), "{} has no doc", field.key());
    }
    assert_eq!(
        config.source_of("max_parallel_slots"),
        Some(&ConfigSource::Default)
    );
    assert_eq!(config.source_of("runner.nope"), None);
    assert_eq!(config.source_of("task.a::b.max_retries"), None);
    assert!(config.task_ids_configured().is_empty());
    let slots = config.effective_max_parallel_slots();
    assert!(slots >= 8, "{slots}");
    assert_eq!(slots % 8, 0);
    assert!(config.effective_max_processes() >= 1);
}

#[test]
fn precedence_across_all_layers() {
    let dir = tempfile::tempdir().unwrap();
    let key = "runner.max_parallel_slots";

    // 1. defaults
    let config = loader(dir.path()).load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 0);
    assert_eq!(config.source_of(key), Some(&ConfigSource::Default));

    // 2. project file
    let project = write(
        dir.path(),
        "pynenc.toml",
        "app_id = \"project\"\n[runner]\nmax_parallel_slots = 1\n",
    );
    let config = loader(dir.path()).load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 1);
    assert_eq!(config.source_of(key), Some(&file_source(&project)));
    assert_eq!(config.app_id, "project");

    // 3. file given in code
    let code_file = write(
        dir.path(),
        "code.yaml",
        "runner:\n  max_parallel_slots: 2\n",
    );
    let base = || loader(dir.path()).file(&code_file);
    let config = base().load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 2);
    assert_eq!(config.source_of(key), Some(&file_source(&code_file)));
    // lower layers still give the keys nobody overrides
    assert_eq!(config.app_id, "project");
    assert_eq!(config.source_of("app_id"), Some(&file_source(&project)));

    // 4. file named by PYNENC__FILEPATH
    let env_file = write(
        dir.path(),
        "env.json",
        r#"{"runner": {"max_parallel_slots": 3}}"#,
    );
    let filepath = env_file.display().to_string();
    let mut vars = env(&[("PYNENC__FILEPATH", &filepath)]);
    let config = base().env_vars(vars.clone()).load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 3);
    assert_eq!(config.source_of(key), Some(&file_source(&env_file)));

    // 5. environment variable
    vars.push(("PYNENC__RUNNER__MAX_PARALLEL_SLOTS".into(), "4".into()));
    let config = base().env_vars(vars.clone()).load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 4);
    assert_eq!(
        config.source_of(key),
        Some(&env_source("PYNENC__RUNNER__MAX_PARALLEL_SLOTS"))
    );

    // 6. value set in code
    let config = base().env_vars(vars).value(key, 5).load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 5);
    assert_eq!(config.source_of(key), Some(&ConfigSource::Code));
    assert_eq!(config.app_id, "project");
}

#[test]
fn later_files_given_in_code_win() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.toml",
        "app_id = \"a\"\nbackend = \"sqlite\"\n",
    );
    let b = write(dir.path(), "b.toml", "app_id = \"b\"\n");
    let config = loader(dir.path()).file(&a).file(&b).load().unwrap();
    assert_eq!(config.app_id, "b");
    assert_eq!(config.backend, BackendKind::Sqlite);
    assert_eq!(config.source_of("app_id"), Some(&file_source(&b)));
    assert_eq!(config.source_of("backend"), Some(&file_source(&a)));
}

#[test]
fn section_beats_top_level_in_same_layer() {
    let dir = tempfile::tempdir().unwrap();
    // top level alone applies to the section
    let f = write(
        dir.path(),
        "top.toml",
        "max_parallel_slots = 3\nredis_port = 7000\n",
    );
    let config = loader(dir.path()).file(&f).load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 3);
    assert_eq!(config.redis.redis_port, 7000);
    assert_eq!(
        config.source_of("runner.max_parallel_slots"),
        Some(&file_source(&f))
    );

    // file: section wins whatever the order
    let f = write(
        dir.path(),
        "both.toml",
        "max_parallel_slots = 3\n[runner]\nmax_parallel_slots = 5\n",
    );
    let config = loader(dir.path()).file(&f).load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 5);
    let f = write(
        dir.path(),
        "both.json",
        r#"{"runner": {"max_parallel_slots": 5}, "max_parallel_slots": 3}"#,
    );
    let config = loader(dir.path()).file(&f).load().unwrap();
    assert_eq!(config.runner.max_parallel_slots, 5);

    // environment
    let config = loader(dir.path())
        .env_vars(env(&[
            ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "7"),
            ("PYNENC__MAX_PARALLEL_SLOTS", "2"),
        ]))
        .load()
        .unwrap();
    assert_eq!(config.runner.max_parallel_slots, 7);
    assert_eq!(
        config.source_of("runner.max_parallel_slots"),
        Some(&env_source("PYNENC__RUNNER__MAX_PARALLEL_SLOTS"))
    );
    let config = loader(dir.path())
        .env_vars(env(&[("PYNENC__MAX_PARALLEL_SLOTS", "2")]))
        .load()
        .unwrap();
    assert_eq!(config.runner.max_parallel_slots, 2);
    assert_eq!(
        config.source_of("runner.max_parallel_slots"),
        Some(&env_source("PYNENC__MAX_PARALLEL_SLOTS"))
    );

    // code
    let config = loader(dir.path())
        .value("runner.max_parallel_slots", 9)
        .value("max_parallel_slots", 1)
        .load()
        .unwrap();
    assert_eq!(config.runner.max_parallel_slots, 9);

    // but a higher layer's top-level value beats a lower layer's section value
    let f = write(dir.path(), "sec.toml", "[runner]\nmax_parallel_slots = 5\n");
    let config = loader(dir.path())
        .file(&f)
        .value("max_parallel_slots", 1)
        .load()
        .unwrap();
    assert_eq!(config.runner.max_parallel_slots, 1);
}

#[test]
fn env_values_are_parsed_into_field_types() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("true", true),
        ("1", true),
        ("yes", true),
        ("YES", true),
        ("false", false),
        ("0", false),
        ("no", false),
    ] {
        let config = loader(dir.path())
            .env_vars(env(&[("PYNENC__DEV_MODE_FORCE_SYNC_TASKS", text)]))
            .load()
            .unwrap();
        assert_eq!(config.dev_mode_force_sync_tasks, expected, "{text}");
    }
    let config = loader(dir.path())
        .env_vars(env(&[
            ("PYNENC__APP_ID", "env-app"),
            ("PYNENC__SERIALIZER", "msgpack"),
            ("PYNENC__PRINT_ARGUMENTS", "truncated"),
            ("PYNENC__TRUNCATE_ARGUMENTS_LENGTH", "10"),
            ("PYNENC__ORCHESTRATOR__CYCLE_CONTROL", "no"),
            ("PYNENC__ORCHESTRATOR__MAX_PENDING_SECONDS", "2.5"),
            ("PYNENC__runner__Max_Parallel_Slots", " 12 "),
            ("PYNENC__REDIS__REDIS_PORT", "6380"),
            ("PYNENC__SQLITE__SQLITE_PATH", "/tmp/x.db"),
            ("OTHER_VAR", "ignored"),
        ]))
        .load()
        .unwrap();
    assert_eq!(config.app_id, "env-app");
    assert_eq!(config.serializer, Serializer::MessagePack);
    assert_eq!(config.print_arguments, ArgumentPrintMode::Truncated(10));
    assert!(!config.orchestrator.cycle_control);
    assert_eq!(config.orchestrator.max_pending_seconds, 2.5);
    assert_eq!(config.runner.max_parallel_slots, 12);
    assert_eq!(config.redis.redis_port, 6380);
    assert_eq!(config.sqlite.sqlite_path, "/tmp/x.db");
    assert_eq!(
        config.source_of("runner.max_parallel_slots"),
        Some(&env_source("PYNENC__runner__Max_Parallel_Slots"))
    );

    // lists: comma separated and JSON arrays
    let config = loader(dir.path())
        .env_vars(env(&[
            ("PYNENC__TASK__m::t__RETRY_FOR", "Timeout, IoError"),
            ("PYNENC__TASK__m::t__KEY_ARGUMENTS", r#"["x", "y"]"#),
        ]))
        .load()
        .unwrap();
    let options = config
        .task_options("m::t", &["x", "y"], TaskOptions::default())
        .unwrap();
    assert_eq!(options.retry_for, vec!["Timeout", "IoError"]);
    assert_eq!(options.key_arguments, vec!["x", "y"]);
}

#[test]
fn task_env_vars_accept_colons_and_dots() {
    let dir = tempfile::tempdir().unwrap();
    let config = loader(dir.path())
        .env_vars(env(&[
            ("PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES", "3"),
            ("PYNENC__TASK__my_crate.jobs.mul__max_retries", "4"),
            (
                "PYNENC__TASK__my_crate.jobs.mul__RUNNING_CONCURRENCY",
                "task",
            ),
            (
                "PYNENC__TASK__my_crate.jobs.mul__REROUTE_ON_CONCURRENCY_CONTROL",
                "0",
            ),
        ]))
        .load()
        .unwrap();
    assert_eq!(
        config.task_ids_configured(),
        vec![
            "my_crate::jobs::add".to_string(),
            "my_crate::jobs::mul".to_string()
        ]
    );
    let add = config
        .task_options("my_crate::jobs::add", &["a", "b"], TaskOptions::default())
        .unwrap();
    assert_eq!(add.max_retries, 3);
    let mul = config
        .task_options("my_crate::jobs::mul", &["a", "b"], TaskOptions::default())
        .unwrap();
    assert_eq!(mul.max_retries, 4);
    assert_eq!(mul.running_concurrency, ConcurrencyControl::Task);
    assert!(!mul.reroute_on_concurrency_control);
    assert_eq!(
        config.source_of("task.my_crate::jobs::mul.max_retries"),
        Some(&env_source("PYNENC__TASK__my_crate.jobs.mul__max_retries"))
    );
    assert_eq!(
        config.source_of("task.my_crate.jobs.add.max_retries"),
        Some(&env_source(
            "PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES"
        ))
    );
}

#[test]
fn yaml_and_json_files() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write(
        dir.path(),
        "conf.yml",
        "app_id: yaml-app\nbackend: redis\norchestrator:\n  blocking_control: false\n  auto_final_invocation_purge_hours: 2\nredis:\n  redis_db: 3\ntask:\n  \"m::t\":\n    max_retries: 2\n    retry_for: [A, B]\n",
    );
    let config = loader(dir.path()).file(&yaml).load().unwrap();
    assert_eq!(config.app_id, "yaml-app");
    assert_eq!(config.backend, BackendKind::Redis);
    assert!(!config.orchestrator.blocking_control);
    assert_eq!(config.orchestrator.auto_final_invocation_purge_hours, 2.0);
    assert_eq!(config.redis.redis_db, 3);
    let options = config
        .task_options("m::t", &[], TaskOptions::default())
        .unwrap();
    assert_eq!(options.max_retries, 2);
    assert_eq!(options.retry_for, vec!["A", "B"]);
    assert_eq!(
        config.source_of("redis.redis_db"),
        Some(&file_source(&yaml))
    );

    let json = write(
        dir.path(),
        "conf.json",
        r#"{"app_id": "json-app", "serializer": "message_pack", "sqlite": {"poll_max_ms": 100},
            "task": {"m.t": {"parallel_batch_size": 7}}}"#,
    );
    let config = loader(dir.path()).file(&json).load().unwrap();
    assert_eq!(config.app_id, "json-app");
    assert_eq!(config.serializer, Serializer::MessagePack);
    assert_eq!(config.sqlite.poll_max_ms, 100);
    let options = config
        .task_options("m::t", &[], TaskOptions::default())
        .unwrap();
    assert_eq!(options.parallel_batch_size, 7);

    // an empty YAML file is an empty layer
    let empty = write(dir.path(), "empty.yaml", "");
    assert_eq!(
        loader(dir.path()).file(&empty).load().unwrap(),
        PynencConfig::default()
    );
}

fn load_err(l: ConfigLoader) -> ConfigError {
    l.load().expect_err("expected a configuration error")
}

#[test]
fn unknown_key_in_file_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "c.toml", "[runner]\nmax_paralel_slots = 3\n");
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(err.source, file_source(&f));
    assert_eq!(err.key, "runner.max_paralel_slots");
    assert!(err.reason.contains("unknown key"), "{err}");
    assert!(
        err.reason.contains("max_parallel_slots"),
        "lists known keys: {err}"
    );
    let text = err.to_string();
    assert!(text.contains(&f.display().to_string()) && text.contains("max_paralel_slots"));

    let f = write(dir.path(), "g.toml", "app_name = \"x\"\n");
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(err.key, "app_name");
    assert!(err.reason.contains("unknown key"), "{err}");

    // in the environment and in code too
    let err = load_err(loader(dir.path()).env_vars(env(&[("PYNENC__RUNNER__SLOTS", "3")])));
    assert_eq!(err.source, env_source("PYNENC__RUNNER__SLOTS"));
    assert_eq!(err.key, "runner.slots");
    let err = load_err(loader(dir.path()).env_vars(env(&[("PYNENC__NOPE", "3")])));
    assert_eq!(err.key, "nope");
    let err = load_err(loader(dir.path()).value("runner.nope", 1));
    assert_eq!(
        (err.source, err.key.as_str()),
        (ConfigSource::Code, "runner.nope")
    );
}

#[test]
fn wrong_type_in_env_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let var = "PYNENC__RUNNER__MAX_PARALLEL_SLOTS";
    let err = load_err(loader(dir.path()).env_vars(env(&[(var, "abc")])));
    assert_eq!(err.source, env_source(var));
    assert_eq!(err.key, "runner.max_parallel_slots");
    assert_eq!(err.reason, "expected an unsigned integer, got \"abc\"");
    assert!(err.to_string().contains(var));

    let err = load_err(loader(dir.path()).env_vars(env(&[(var, "-3")])));
    assert!(err.reason.contains("unsigned"), "{err}");
    let err = load_err(
        loader(dir.path()).env_vars(env(&[("PYNENC__DEV_MODE_FORCE_SYNC_TASKS", "maybe")])),
    );
    assert!(err.reason.contains("boolean"), "{err}");
    let err = load_err(loader(dir.path()).env_vars(env(&[("PYNENC__REDIS__REDIS_PORT", "70000")])));
    assert!(err.reason.contains("65535"), "{err}");
    let err = load_err(
        loader(dir.path()).env_vars(env(&[("PYNENC__RUNNER__SHUTDOWN_GRACE_SECONDS", "soon")])),
    );
    assert!(err.reason.contains("expected a number"), "{err}");
}

#[test]
fn wrong_type_in_file_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "c.toml",
        "[runner]\nmax_parallel_slots = \"abc\"\n",
    );
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(err.key, "runner.max_parallel_slots");
    assert_eq!(
        err.reason,
        "expected an unsigned integer, got string \"abc\""
    );
    let err = load_err(loader(dir.path()).value("runner.max_parallel_slots", -2));
    assert_eq!(err.source, ConfigSource::Code);
    assert_eq!(err.reason, "expected an unsigned integer, got number -2");
    let err = load_err(loader(dir.path()).value("orchestrator.max_pending_seconds", -1.0));
    assert!(err.reason.contains("greater than 0"), "{err}");
    let err = load_err(loader(dir.path()).value("app_id", 3));
    assert_eq!(err.reason, "expected a string, got number 3");
    let f = write(dir.path(), "d.toml", "runner = 3\n");
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(err.key, "runner");
}

#[test]
fn unparsable_file_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "bad.toml", "app_id = \"x\"\n[runner\nmax = 1\n");
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(err.source, file_source(&f));
    assert_eq!(err.key, "(file)");
    assert!(err.reason.contains("line 2"), "{err}");
    assert!(err.to_string().contains("bad.toml"));

    // the project file too
    let sub = dir.path().join("proj");
    fs::create_dir(&sub).unwrap();
    let p = write(&sub, "pynenc.toml", "app_id = \n");
    let err = load_err(loader(&sub));
    assert_eq!(err.source, file_source(&p));
    assert_eq!(err.key, "(file)");

    let f = write(dir.path(), "bad.yaml", "a: [1, 2\n");
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!((err.source, err.key.as_str()), (file_source(&f), "(file)"));
    assert!(err.reason.contains("yaml"), "{}", err.reason);
    let f = write(dir.path(), "bad.json", "{\"app_id\": }");
    let err = load_err(loader(dir.path()).file(&f));
    assert!(err.reason.contains("line 1"), "{}", err.reason);
    let f = write(dir.path(), "list.json", "[1, 2]");
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(err.key, "(file)");
}

#[test]
fn file_errors_keep_the_reader_and_parser_errors_as_their_source() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().unwrap();
    let err = load_err(loader(dir.path()).file(dir.path().join("missing.toml")));
    let io = err.source().expect("the I/O error");
    assert!(io.downcast_ref::<std::io::Error>().is_some(), "{io:?}");
    for (name, text) in [
        ("bad.toml", "[runner\n"),
        ("bad.json", "{\"app_id\": }"),
        ("bad.yaml", "a: [1\n"),
    ] {
        let f = write(dir.path(), name, text);
        let err = load_err(loader(dir.path()).file(&f));
        let parser = err.source().expect("the parser's error");
        assert!(
            err.reason.contains(parser.to_string().trim_end()),
            "{name}: {err}"
        );
    }
    let toml_err = load_err(loader(dir.path()).file(dir.path().join("bad.toml")));
    assert!(toml_err
        .source()
        .and_then(|e| e.downcast_ref::<toml::de::Error>())
        .is_some());
}

#[test]
fn missing_or_unsupported_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let err = load_err(loader(dir.path()).file(&missing));
    assert_eq!(err.source, file_source(&missing));
    assert_eq!(err.key, "(file)");
    assert!(err.reason.contains("cannot read"), "{err}");
    assert!(err.reason.contains("given in code"), "{err}");

    let missing = dir.path().join("gone.yaml");
    let err = load_err(
        loader(dir.path()).env_vars(env(&[("PYNENC__FILEPATH", &missing.display().to_string())])),
    );
    assert_eq!(err.source, file_source(&missing));
    assert!(err.reason.contains("PYNENC__FILEPATH"), "{err}");

    let ini = write(dir.path(), "conf.ini", "app_id = x\n");
    let err = load_err(loader(dir.path()).file(&ini));
    assert!(err.reason.contains("unsupported"), "{err}");

    // no project file is fine
    assert!(loader(dir.path()).load().is_ok());
}

#[test]
fn unknown_section() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "c.toml", "[runer]\nmax_parallel_slots = 3\n");
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(err.source, file_source(&f));
    assert_eq!(err.key, "runer");
    assert!(err.reason.contains("unknown section 'runer'"), "{err}");
    assert!(err.reason.contains("runner"), "lists known sections: {err}");

    let var = "PYNENC__RUNER__MAX_PARALLEL_SLOTS";
    let err = load_err(loader(dir.path()).env_vars(env(&[(var, "3")])));
    assert_eq!(err.source, env_source(var));
    assert_eq!(err.key, "runer.max_parallel_slots");
    assert!(err.reason.contains("unknown section"), "{err}");

    let err = load_err(loader(dir.path()).value("runer.max_parallel_slots", 3));
    assert!(err.reason.contains("unknown section"), "{err}");
}

#[test]
fn bad_serializer_and_backend_names() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "c.toml", "serializer = \"pickle\"\n");
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(err.key, "serializer");
    assert!(
        err.reason.contains("serializer name") && err.reason.contains("pickle"),
        "{err}"
    );

    let err = load_err(loader(dir.path()).env_vars(env(&[("PYNENC__BACKEND", "mongo")])));
    assert_eq!(err.source, env_source("PYNENC__BACKEND"));
    assert_eq!(err.key, "backend");
    assert_eq!(
        err.reason,
        "expected one of memory, sqlite, redis, postgres, got \"mongo\""
    );

    let err = load_err(loader(dir.path()).value("print_arguments", "some"));
    assert_eq!(err.key, "print_arguments");
    assert!(
        err.reason.contains("full, keys, truncated, hidden"),
        "{err}"
    );
}

#[test]
fn fields_that_must_fit_together() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_err(loader(dir.path()).value("sqlite.poll_min_ms", 100));
    assert_eq!(
        (err.source, err.key.as_str()),
        (ConfigSource::Code, "sqlite.poll_min_ms")
    );
    let err = load_err(loader(dir.path()).env_vars(env(&[
        ("PYNENC__RUNNER__MAX_PROCESSES", "1"),
        ("PYNENC__MIN_PROCESSES", "2"),
    ])));
    assert_eq!(err.key, "runner.min_processes");
    assert!(loader(dir.path())
        .value("runner.min_processes", 3)
        .load()
        .is_ok());
    // a dead evaluator's lease (3 intervals) must end inside the window
    let err = load_err(loader(dir.path()).value("triggers.evaluate_interval_seconds", 5.0));
    assert_eq!(
        (err.source, err.key.as_str()),
        (ConfigSource::Code, "triggers.evaluate_interval_seconds")
    );
    assert!(
        err.reason.contains("missed_tick_window_seconds (10)"),
        "{}",
        err.reason
    );
    assert!(loader(dir.path())
        .value("triggers.evaluate_interval_seconds", 5.0)
        .value("triggers.missed_tick_window_seconds", 16.0)
        .load()
        .is_ok());
}

#[test]
fn task_options_from_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "pynenc.toml",
        "[task.\"my_crate::jobs::add\"]\nmax_retries = 3\nretry_for = [\"Timeout\"]\nregistration_concurrency = \"keys\"\nkey_arguments = [\"a\"]\non_diff_non_key_args_raise = true\n",
    );
    let config = loader(dir.path())
        .env_vars(env(&[(
            "PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES",
            "5",
        )]))
        .load()
        .unwrap();
    let base = TaskOptions {
        parallel_batch_size: 10,
        ..TaskOptions::default()
    };
    let options = config
        .task_options("my_crate::jobs::add", &["a", "b"], base.clone())
        .unwrap();
    assert_eq!(options.max_retries, 5);
    assert_eq!(options.retry_for, vec!["Timeout"]);
    assert_eq!(options.registration_concurrency, ConcurrencyControl::Keys);
    assert_eq!(options.key_arguments, vec!["a"]);
    assert!(options.on_diff_non_key_args_raise);
    assert_eq!(
        options.parallel_batch_size, 10,
        "base kept where not overridden"
    );
    assert_eq!(
        config.source_of("task.my_crate::jobs::add.max_retries"),
        Some(&env_source(
            "PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES"
        ))
    );
    assert_eq!(
        config.source_of("task.my_crate::jobs::add.retry_for"),
        Some(&file_source(&f))
    );
    // a task without overrides keeps its base
    assert_eq!(
        config.task_options("other::t", &[], base.clone()).unwrap(),
        base
    );
    // code wins over env
    let config = loader(dir.path())
        .env_vars(env(&[(
            "PYNENC__TASK__my_crate::jobs::add__MAX_RETRIES",
            "5",
        )]))
        .value("task.my_crate::jobs::add.max_retries", 9)
        .load()
        .unwrap();
    let options = config
        .task_options("my_crate::jobs::add", &["a"], TaskOptions::default())
        .unwrap();
    assert_eq!(options.max_retries, 9);
}

#[test]
fn bad_task_option_is_an_error_naming_task_option_and_source() {
    let dir = tempfile::tempdir().unwrap();
    // detected at load
    let var = "PYNENC__TASK__m::t__MAX_RETRIES";
    let err = load_err(loader(dir.path()).env_vars(env(&[(var, "x")])));
    assert_eq!(err.source, env_source(var));
    assert_eq!(err.key, "task.m::t.max_retries");
    assert_eq!(err.reason, "expected an unsigned integer, got \"x\"");
    let err =
        load_err(loader(dir.path()).env_vars(env(&[("PYNENC__TASK__m::t__MAX_RETRIEZ", "1")])));
    assert_eq!(err.key, "task.m::t.max_retriez");
    assert!(err.reason.contains("unknown task option"), "{err}");
    let f = write(
        dir.path(),
        "c.toml",
        "[task.\"m::t\"]\nrunning_concurrency = \"sometimes\"\n",
    );
    let err = load_err(loader(dir.path()).file(&f));
    assert_eq!(
        (err.source, err.key.as_str()),
        (file_source(&f), "task.m::t.running_concurrency")
    );
    let err = load_err(loader(dir.path()).value("task.m::t.key_arguments", 3));
    assert_eq!(err.key, "task.m::t.key_arguments");

    // found by task_options (a stored value that does not fit)
    let mut config = PynencConfig::default();
    let mut task = TaskOverrides {
        spelling: "m::t".into(),
        ..TaskOverrides::default()
    };
    task.options
        .insert("max_retries".into(), (Value::from("x"), env_source(var)));
    config.task_overrides.insert(tasks::shell_key("m::t"), task);
    let err = config
        .task_options("m::t", &[], TaskOptions::default())
        .unwrap_err();
    match &err {
        PynencError::InvalidTaskOptions {
            task_id,
            option,
            message,
        } => {
            assert_eq!(task_id, "m::t");
            assert_eq!(option, "max_retries");
            assert_eq!(
                message,
                "from environment variable PYNENC__TASK__m::t__MAX_RETRIES: expected an unsigned integer, got string \"x\""
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn task_options_validation_failure_propagates() {
    let dir = tempfile::tempdir().unwrap();
    let config = loader(dir.path())
        .value("task.m::t.key_arguments", "nope")
        .value("task.m::t.running_concurrency", "keys")
        .load()
        .unwrap();
    let err = config
        .task_options("m::t", &["x", "y"], TaskOptions::default())
        .unwrap_err();
    match &err {
        PynencError::InvalidTaskOptions {
            task_id,
            option,
            message,
        } => {
            assert_eq!(task_id, "m::t");
            assert_eq!(option, "key_arguments");
            assert!(message.contains("`nope` is not a parameter"), "{message}");
            assert!(message.contains("value from code"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let config = loader(dir.path())
        .value("task.m::t.parallel_batch_size", 0)
        .load()
        .unwrap();
    let err = config
        .task_options("m::t", &[], TaskOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, PynencError::InvalidTaskOptions { ref option, .. } if option == "parallel_batch_size")
    );
}

#[test]
fn registration_scope_from_file_and_env_and_its_rules() {
    use pynenc_model::RegistrationScope;
    use pynenc_options::RegistrationScopeName;

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pynenc.toml",
        "[task.\"m::t\"]\nregistration_concurrency = \"arguments\"\nregistration_scope = \"active\"\n",
    );
    let options = loader(dir.path())
        .load()
        .unwrap()
        .task_options("m::t", &["x"], TaskOptions::default())
        .unwrap();
    assert_eq!(options.registration_scope, RegistrationScopeName::Active);
    assert_eq!(options.registration_scope(), RegistrationScope::Active);
    // environment variables win over the file, in any case
    let config = loader(dir.path())
        .env_vars(env(&[
            ("PYNENC__TASK__M__T__REGISTRATION_SCOPE", "Cached"),
            ("PYNENC__TASK__M__T__REGISTRATION_CACHE_SECONDS", "45"),
        ]))
        .load()
        .unwrap();
    let options = config
        .task_options("m::t", &["x"], TaskOptions::default())
        .unwrap();
    assert_eq!(
        options.registration_scope(),
        RegistrationScope::Cached { ttl_us: 45_000_000 }
    );
    assert_eq!(
        config.source_of("task.m::t.registration_scope"),
        Some(&env_source("PYNENC__TASK__M__T__REGISTRATION_SCOPE"))
    );

    // an unknown scope or a cache time that is not a number fail at load
    let var = "PYNENC__TASK__M__T__REGISTRATION_SCOPE";
    let err = load_err(loader(dir.path()).env_vars(env(&[(var, "running")])));
    assert_eq!(err.key, "task.M__T.registration_scope");
    assert_eq!(
        err.reason,
        "expected one of queued, active, cached, got \"running\""
    );
    let err = load_err(loader(dir.path()).value("task.m::t.registration_cache_seconds", -1));
    assert_eq!(err.key, "task.m::t.registration_cache_seconds");

    // a scope without registration concurrency does nothing: an error
    // naming where the scope came from
    let config = loader(dir.path())
        .value("task.other::t.registration_scope", "active")
        .load()
        .unwrap();
    let err = config
        .task_options("other::t", &[], TaskOptions::default())
        .unwrap_err();
    match &err {
        PynencError::InvalidTaskOptions {
            task_id,
            option,
            message,
        } => {
            assert_eq!(task_id, "other::t");
            assert_eq!(option, "registration_scope");
            assert!(
                message.contains("does nothing without registration concurrency"),
                "{message}"
            );
            assert!(message.contains("value from code"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // `cached` for 0 seconds is never reused: an error too
    let config = loader(dir.path())
        .value("task.m::t.registration_scope", "cached")
        .value("task.m::t.registration_cache_seconds", 0)
        .load()
        .unwrap();
    let err = config
        .task_options("m::t", &["x"], TaskOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, PynencError::InvalidTaskOptions { ref option, .. } if option == "registration_cache_seconds"),
        "{err:?}"
    );
}

#[test]
fn every_task_option_name_is_configurable() {
    for name in pynenc_options::OPTIONS.iter().map(|o| o.name) {
        let sample = match name {
            "retry_for" | "key_arguments" => "a,b",
            "running_concurrency" | "registration_concurrency" => "task",
            "registration_scope" => "active",
            "on_diff_non_key_args_raise" | "reroute_on_concurrency_control" | "workflow" => "true",
            _ => "2",
        };
        let mut options = TaskOptions::default();
        apply_task_option(&mut options, name, Raw::Env(sample))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn describe_lists_every_field_with_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "c.toml",
        "app_id = \"described\"\n[sqlite]\npoll_max_ms = 70\n",
    );
    let config = loader(dir.path())
        .file(&f)
        .env_vars(env(&[
            ("PYNENC__RUNNER__MAX_PARALLEL_SLOTS", "8"),
            ("PYNENC__TASK__m.t__MAX_RETRIES", "2"),
            ("PYNENC__REDIS__REDIS_PASSWORD", "hunter2"),
            (
                "PYNENC__REDIS__REDIS_URL",
                "rediss://bob:s3cret@db.example:6380/1",
            ),
        ]))
        .value("orchestrator.cycle_control", false)
        .load()
        .unwrap();
    let text = config.describe();
    assert_eq!(text.lines().count(), FIELDS.len() + 1, "{text}");
    for field in PynencConfig::fields() {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{} = ", field.key()))),
            "{} missing in\n{text}",
            field.key()
        );
    }
    assert!(text.contains(
        "runner.max_parallel_slots = 8    (environment variable PYNENC__RUNNER__MAX_PARALLEL_SLOTS)"
    ), "{text}");
    assert!(
        text.contains(&format!("app_id = \"described\"    (file {})", f.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sqlite.poll_max_ms = 70    (file {})",
            f.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("orchestrator.cycle_control = false    (code)"),
        "{text}"
    );
    assert!(text.contains("backend = \"memory\"    (default)"), "{text}");
    assert!(
        text.contains("orchestrator.max_pending_seconds = 10.0    (default)"),
        "{text}"
    );
    assert!(text.contains(
        "task.\"m::t\".max_retries = 2    (environment variable PYNENC__TASK__m.t__MAX_RETRIES)"
    ), "{text}");
    // global first, then sections in order
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("app_id = "), "{text}");
    let pos = |k: &str| text.find(&format!("\n{k}.")).unwrap();
    assert!(
        pos("orchestrator") < pos("redis")
            && pos("redis") < pos("runner")
            && pos("runner") < pos("sqlite")
    );
    // secrets stay secret, in describe and in Debug
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret"),
        "{text}"
    );
    assert!(text.contains("redis.redis_password = \"***\""), "{text}");
    assert!(
        text.contains("redis.redis_url = \"rediss://bob:***@db.example:6380/1\""),
        "{text}"
    );
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("s3cret"),
        "{debug}"
    );
    assert_eq!(config.redis.redis_password, "hunter2");
}

#[test]
fn url_masking() {
    assert_eq!(
        mask_url("redis://localhost:6379/0").unwrap(),
        "redis://localhost:6379/0"
    );
    assert_eq!(mask_url("redis://:pw@h:1").unwrap(), "redis://:***@h:1");
    assert_eq!(mask_url("redis://user@h").unwrap(), "redis://user@h");
    assert_eq!(mask_url("not a url"), None);
}

#[test]
fn per_task_variables_have_a_shell_safe_form_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let var = "PYNENC__TASK__MY_CRATE__JOBS__ADD__MAX_RETRIES";
    let config = loader(dir.path())
        .env_vars(env(&[
            (var, "7"),
            (
                "PYNENC__TASK__my_crate__jobs__mul__RUNNING_CONCURRENCY",
                "task",
            ),
        ]))
        .load()
        .unwrap();
    let add = config
        .task_options("my_crate::jobs::add", &["x"], TaskOptions::default())
        .unwrap();
    assert_eq!(add.max_retries, 7);
    let mul = config
        .task_options("my_crate::jobs::mul", &["x"], TaskOptions::default())
        .unwrap();
    assert_eq!(mul.running_concurrency, ConcurrencyControl::Task);
    assert_eq!(
        config.source_of("task.my_crate::jobs::add.max_retries"),
        Some(&env_source(var))
    );
    // every spelling names the same task: the later layer wins
    let config = loader(dir.path())
        .env_vars(env(&[(var, "7")]))
        .value("task.my_crate::jobs::add.max_retries", 2)
        .load()
        .unwrap();
    let add = config
        .task_options("my_crate::jobs::add", &[], TaskOptions::default())
        .unwrap();
    assert_eq!(add.max_retries, 2);
    assert_eq!(config.task_ids_configured(), vec!["my_crate::jobs::add"]);
}

#[test]
fn settings_for_tasks_of_no_registered_id_are_reported_with_near_ids() {
    let dir = tempfile::tempdir().unwrap();
    let var = "PYNENC__TASK__MY_CRATE__JOBS__AD__MAX_RETRIES";
    let config = loader(dir.path())
        .env_vars(env(&[
            (var, "3"),
            ("PYNENC__TASK__MY_CRATE__JOBS__MUL__MAX_RETRIES", "1"),
        ]))
        .load()
        .unwrap();
    let registered = ["my_crate::jobs::add", "my_crate::jobs::mul"];
    let unmatched = config.unmatched_task_settings(registered);
    assert_eq!(
        unmatched,
        vec![UnmatchedTaskSetting {
            task_id: "MY_CRATE__JOBS__AD".into(),
            sources: vec![env_source(var)],
            suggestions: vec!["my_crate::jobs::add".into()],
        }]
    );
}

#[test]
fn an_unknown_runner_kind_names_its_source_and_the_valid_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let var = "PYNENC__RUNNER__KIND";
    let err = load_err(loader(dir.path()).env_vars(env(&[(var, "threads")])));
    assert_eq!(err.source, env_source(var));
    assert_eq!(err.key, "runner.kind");
    assert_eq!(
        err.reason,
        "expected one of thread, process, persistent_process, multi_thread, got \"threads\""
    );
    let config = loader(dir.path())
        .value("runner.kind", "multi_thread")
        .load()
        .unwrap();
    assert_eq!(config.runner.kind, RunnerKind::MultiThread);
}

//! The command line's grammar: the connection flags every command takes,
//! the commands and their arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate a pynenc app: list, show, cancel, rerun and purge invocations,
/// see its tasks, runners and queue.
///
/// The app is found through the same configuration layers as the library
/// (`pynenc.toml`, `PYNENC__…` environment variables), then the flags below.
#[derive(Debug, Parser)]
#[command(name = "pynenc", version, propagate_version = true)]
#[command(after_help = EXIT_CODES)]
pub struct Cli {
    /// Where the app's data is.
    #[command(flatten)]
    pub connection: Connection,
    /// Print JSON (one document) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The exit codes, printed under `--help`.
pub const EXIT_CODES: &str = "Exit codes:
  0  done
  1  the backend failed, or an action failed part way
  2  bad usage or input: unknown flag, bad filter, status, task or id text
  3  not found: no such invocation, or no such app on the backend
  4  refused: nothing was changed (purge not confirmed, cancel of an ended invocation)
  5  cannot connect: bad configuration, unreachable server, wrong password, missing SQLite file";

/// Where the app's data is: flags on top of the configuration layers.
#[derive(Debug, Clone, Default, Args)]
pub struct Connection {
    /// A configuration file (TOML, YAML or JSON) read before the environment.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The backend (default: the configuration's `backend`).
    #[arg(long, global = true, value_enum)]
    pub backend: Option<BackendArg>,
    /// The SQLite file (implies `--backend sqlite`).
    #[arg(long, global = true, value_name = "FILE")]
    pub sqlite_path: Option<PathBuf>,
    /// The Redis URL, `redis://[user:password@]host:port/db` (implies `--backend redis`).
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The PostgreSQL URL, `postgres://user[:password]@host:port/database`
    /// (implies `--backend postgres`).
    #[arg(long, global = true, value_name = "URL")]
    pub postgres_url: Option<String>,
    /// The app id (default: the configuration's `app_id`).
    #[arg(long = "app", global = true, value_name = "APP_ID")]
    pub app_id: Option<String>,
}

/// A backend by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// In this process only (the embedded form's own app).
    Memory,
    /// A SQLite file.
    Sqlite,
    /// A Redis server.
    Redis,
    /// A PostgreSQL database.
    Postgres,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a runner with this program's tasks (embedded form only).
    #[command(subcommand)]
    Runner(RunnerCommand),
    /// Call a task by its id with JSON arguments (standalone: a task with
    /// invocations stored and no concurrency control).
    Call(CallArgs),
    /// List invocations, newest first, with filters and pages.
    List(ListArgs),
    /// One invocation: its call, result or error, history, family and waits.
    Show(IdArg),
    /// An invocation's descendants as a tree, with their statuses.
    Tree(TreeArgs),
    /// The tasks seen, with counts by status and failures by error kind.
    Tasks,
    /// The runners, live and recently dead, and who holds the recovery lease.
    Runners,
    /// The queue: its depth, its oldest invocation and what runs next.
    Queue(QueueArgs),
    /// The app ids found on the backend.
    Apps,
    /// The triggers: those the program declares and those runners of the
    /// app stored; condition, next tick, and what the latest ticks fired.
    Triggers,
    /// Cancel invocations by id or by filter.
    Cancel(CancelArgs),
    /// Run invocations again, by id or by filter: a new invocation of the
    /// same call, linked to the original.
    Rerun(RerunArgs),
    /// Retry FAILED invocations now, by id or by filter.
    RetryFailed(RetryArgs),
    /// Delete ended invocations by filter (shows what will go and asks first).
    Purge(PurgeArgs),
    /// The effective configuration with where each value came from, secrets masked.
    Config,
    /// The status state machine.
    #[command(subcommand)]
    Status(StatusCommand),
    /// Live counts by status and throughput.
    Watch(WatchArgs),
    /// Serve the web monitor: live views, and actions behind authentication.
    ///
    /// Credentials come from the environment, never from flags (which other
    /// users of the machine can read): PYNENC_MONITOR_OPERATOR_TOKEN (user
    /// `operator`, may act) and PYNENC_MONITOR_VIEWER_TOKEN (user `viewer`,
    /// read-only), each at least 8 characters. With neither set, an operator
    /// token is generated and printed, and only a loopback address is allowed.
    Monitor(MonitorArgs),
}

/// `runner …`
#[derive(Debug, Subcommand)]
pub enum RunnerCommand {
    /// Run a runner until Ctrl-C or SIGTERM.
    Start(RunnerStartArgs),
}

/// `runner start`
#[derive(Debug, Args)]
pub struct RunnerStartArgs {
    /// The runner kind (default: the configuration's `runner.kind`).
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Invocations run at once (in each worker process for multi-thread).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Worker processes (persistent-process and multi-thread runners).
    #[arg(long)]
    pub processes: Option<usize>,
}

/// A runner kind by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Tokio tasks and blocking threads in this process.
    Thread,
    /// A child process per invocation.
    Process,
    /// A fixed pool of worker processes.
    PersistentProcess,
    /// Worker processes running threads, scaled by queue depth.
    MultiThread,
}

impl KindArg {
    /// The configuration's name of the kind.
    pub fn config_name(self) -> &'static str {
        match self {
            KindArg::Thread => "thread",
            KindArg::Process => "process",
            KindArg::PersistentProcess => "persistent_process",
            KindArg::MultiThread => "multi_thread",
        }
    }
}

/// `call`
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The task id (`module::function`).
    pub task: String,
    /// An argument as `name=json` (repeat for each parameter).
    #[arg(long = "arg", value_name = "NAME=JSON")]
    pub args: Vec<String>,
    /// Wait for the result and print it.
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: give up after this long (`30s`, `5m`).
    #[arg(long, value_name = "DURATION", requires = "wait")]
    pub timeout: Option<String>,
}

/// The filters shared by `list`, `cancel`, `retry-failed`.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only these tasks (repeat, or separate with commas).
    #[arg(long = "task", value_name = "TASK_ID", value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Only these statuses, comma separated (`failed,cancelled`).
    #[arg(long, value_name = "STATUSES")]
    pub status: Option<String>,
    /// Created at or after: RFC 3339 time, or an age (`90s`, `30m`, `2h`, `7d`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Created before: RFC 3339 time, or an age.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only the children of this invocation.
    #[arg(long, value_name = "ID")]
    pub parent: Option<String>,
    /// Only invocations owned by this runner now.
    #[arg(long, value_name = "RUNNER_ID")]
    pub runner: Option<String>,
}

/// `list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The filters.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub oldest_first: bool,
    /// Invocations per page (at most 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Continue after this cursor (printed under a full page).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
}

/// One invocation id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The invocation id.
    pub id: String,
}

/// `tree`
#[derive(Debug, Args)]
pub struct TreeArgs {
    /// The invocation id at the root.
    pub id: String,
    /// How many generations to show.
    #[arg(long, default_value_t = 10)]
    pub depth: usize,
}

/// `queue`
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// How many of the oldest waiting invocations to show.
    #[arg(long, default_value_t = 10)]
    pub next: usize,
}

/// `cancel`
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The invocation ids (or use the filters).
    pub ids: Vec<String>,
    /// Cancel their descendants too.
    #[arg(long)]
    pub children: bool,
    /// The filters (when no id is given; at least one is needed).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `rerun`
#[derive(Debug, Args)]
pub struct RerunArgs {
    /// The invocation ids (or use the filters).
    pub ids: Vec<String>,
    /// The filters (when no id is given; at least one is needed).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `retry-failed`
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The FAILED invocation ids (or use the filters).
    pub ids: Vec<String>,
    /// The filters (when no id is given; `--status` is always `failed`).
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// `purge`
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Only invocations that ended longer ago than this (`30m`, `12h`, `7d`).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Only these final statuses, comma separated (default: every final status).
    #[arg(long, value_name = "STATUSES")]
    pub status: Option<String>,
    /// Only these tasks (repeat, or separate with commas).
    #[arg(long = "task", value_name = "TASK_ID", value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Do not ask: delete (needed when not on a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// `status …`
#[derive(Debug, Subcommand)]
pub enum StatusCommand {
    /// Every status and where it can go next.
    Graph(GraphArgs),
}

/// `status graph`
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// As a Mermaid state diagram.
    #[arg(long)]
    pub mermaid: bool,
}

/// `watch`
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Longest time between two updates (`1s`, `500ms`); the backend's
    /// wake-ups (new work, ended invocations) update sooner.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
    /// Stop after this many updates (default: until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

/// `monitor` (credentials: see [`Command::Monitor`]).
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Where to listen (anything but a loopback address needs credentials).
    #[arg(long, default_value = "127.0.0.1:8025", value_name = "ADDR")]
    pub bind: std::net::SocketAddr,
    /// An origin allowed to POST besides the monitor's own, e.g. the public
    /// URL of a reverse proxy in front of it (repeat for more).
    #[arg(long = "allow-origin", value_name = "URL")]
    pub allow_origins: Vec<String>,
    /// Another argument name to redact (any name containing it; repeat for
    /// more). Names with password, secret, token, ... are always redacted.
    #[arg(long = "redact", value_name = "NAME")]
    pub redact: Vec<String>,
    /// The largest page of invocations served.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub max_page_size: usize,
    /// Append the audit log of actions to this file (JSON lines; read back
    /// at start). Without it the audit page starts empty at each start.
    #[arg(long, value_name = "FILE")]
    pub audit_file: Option<PathBuf>,
}

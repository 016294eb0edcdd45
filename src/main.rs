//! The `transponder` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "transponder",
    version,
    about = "A real-time messaging server in the shape of Slack's real-time tier"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve websockets, the Web API and the admin API.
    Serve(Box<transponder::config::ServeArgs>),
    /// Users, offline: `user add <name> [--bot]` prints only the token.
    #[command(subcommand)]
    User(UserCommand),
    /// Channels, offline: `channel add <name>` prints only the id;
    /// `channel import [FILE]` creates conversations in bulk.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Load generator: fan-out, connect storm, idle hold, typing storm,
    /// against Transponder (or nats-server / redis-server for comparison).
    Loadgen(transponder::loadgen::LoadgenArgs),
    /// One load-generator worker process (started by `loadgen`).
    #[command(hide = true)]
    LoadgenWorker,
}

#[derive(Args)]
struct DataDir {
    /// The store's folder.
    #[arg(long, env = "TRANSPONDER_DATA_DIR", default_value = "transponder-data")]
    data_dir: PathBuf,
    /// The store: `sqlite` (in --data-dir, the default) or a
    /// postgres://user@host:port/db URL.
    #[arg(long, env = "TRANSPONDER_STORE")]
    store: Option<String>,
}

impl DataDir {
    fn backend(&self) -> Result<transponder::store::Backend, String> {
        transponder::store::Backend::parse(self.store.as_deref(), &self.data_dir)
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print its token.
    Add {
        name: String,
        /// A bot user (its token starts with xoxb-).
        #[arg(long)]
        bot: bool,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// Create a conversation and print its id.
    Add {
        name: String,
        /// A private channel.
        #[arg(long)]
        private: bool,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Create conversations in bulk, all or nothing, with the server
    /// stopped. One per line, JSON (`{"name":"design","private":false,
    /// "members":["U…"]}`) or CSV (`design,false,U… U…`).
    Import {
        /// The input file; standard input when absent or `-`.
        file: Option<PathBuf>,
        /// Write `id<TAB>name` of every new conversation here once done.
        #[arg(long)]
        ids: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// The import's input: a file, or standard input.
fn input(file: Option<PathBuf>) -> Result<Box<dyn std::io::BufRead + Send>, String> {
    match file {
        Some(path) if path.as_os_str() != "-" => {
            let f = std::fs::File::open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
        }
        _ => Ok(Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::io::stdin(),
        ))),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Loadgen(args) => return transponder::loadgen::run(args),
        Command::LoadgenWorker => return transponder::loadgen::worker::main(),
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRANSPONDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Serve(args) => args.resolve().and_then(transponder::node::serve),
        Command::User(UserCommand::Add { name, bot, dir }) => dir
            .backend()
            .and_then(|store| transponder::provision::add_user(&store, &name, bot))
            .map(|token| println!("{token}")),
        Command::Channel(ChannelCommand::Add { name, private, dir }) => dir
            .backend()
            .and_then(|store| transponder::provision::add_channel(&store, &name, private))
            .map(|id| println!("{id}")),
        Command::Channel(ChannelCommand::Import { file, ids, dir }) => dir
            .backend()
            .and_then(|store| Ok((store, input(file)?)))
            .and_then(|(store, input)| {
                transponder::provision::import::import_channels(&store, input, ids.as_deref())
            })
            .map(|done| {
                println!(
                    "imported {} conversations, {} memberships in {:.1} s",
                    done.channels, done.memberships, done.secs
                )
            }),
        Command::Loadgen(_) | Command::LoadgenWorker => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transponder: {e}");
            ExitCode::from(2)
        }
    }
}

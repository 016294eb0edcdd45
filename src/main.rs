//! The `transponder` command line.

use clap::{Parser, Subcommand};

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
    Serve(transponder::config::ServeArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRANSPONDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Serve(args) => args.resolve().and_then(transponder::node::serve),
    };
    if let Err(e) = result {
        eprintln!("transponder: {e}");
        std::process::exit(2);
    }
}

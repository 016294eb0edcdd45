//! The README's "Trying it" block works as documented: pasted into an
//! interactive bash, it starts the real binary, talks to it with curl, jq and
//! a websocket client, prints `hello`, the published message and `goodbye`,
//! stops the server and exits 0 — twice on the same data directory, which
//! the second time already holds #general.
//!
//! The block is read from README.md itself, so the README cannot rot. It runs
//! as the reader runs it, with three settings the block documents:
//! `TRANSPONDER_BIN` (this build's binary instead of `cargo build --release`)
//! and `TRANSPONDER_{GATEWAY,API,ADMIN}_PORT` (free ports instead of
//! 7770–7772, which a server someone runs by hand may hold).
//!
//! Needs `curl`, `jq` and Python's `websockets`: `tests/run.sh` installs them
//! (the latter in `tests/readme/.venv`, pinned in
//! `tests/readme/requirements.txt`).

mod common;

use std::fs::{self, File};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{free_ports, fresh_dir};

/// Bound on one run of the block. Its own waits are bounded (readiness
/// ~10 s, each frame 10 s, the drain 10 s); this catches a block that hangs.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);

const HEADING: &str = "## Trying it";

/// The body of the first ```` ```bash ```` block under "## Trying it" (the
/// section's other blocks are install hints and sample output).
fn trying_it_block(readme: &str) -> String {
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim_end() != HEADING)
        .skip(1)
        .take_while(|l| !l.starts_with("## "));
    lines
        .find(|l| l.trim_end() == "```bash")
        .unwrap_or_else(|| panic!("README.md has no ```bash block under {HEADING:?}"));
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    assert!(!body.is_empty(), "the block under {HEADING:?} is empty");
    body.join("\n") + "\n"
}

/// Where `python3` finds `websockets`: the venv tests/run.sh makes, else
/// whatever `python3` is on PATH if it has the package.
fn python_bin_dir(repo: &Path) -> Option<PathBuf> {
    let venv_bin = repo.join("tests/readme/.venv/bin");
    if venv_bin.join("python3").exists() {
        return Some(venv_bin);
    }
    let on_path = Command::new("python3")
        .args(["-c", "import websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        on_path,
        "the README block needs Python's websockets: run tests/run.sh, or \
         python3 -m venv tests/readme/.venv && \
         tests/readme/.venv/bin/pip install -r tests/readme/requirements.txt"
    );
    None
}

fn require_tool(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the README block needs {tool}: run tests/run.sh, or apt-get install {tool}"
    );
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// The block's ports that still accepted connections once it had exited.
    left_listening: Vec<u16>,
}

impl Run {
    /// Everything the block printed, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "{}\n---- stdout ----\n{}---- stderr ----\n{}---- end ----",
            self.status, self.stdout, self.stderr
        )
    }

    /// The JSON objects the block printed, one per stdout line.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Feeds `block` to `bash -i` on stdin, as a paste into a terminal: history
/// expansion and interactive comments are on, as they are for the reader.
fn run_pasted(block: &str, cwd: &Path, ports: &[u16], python: Option<&Path>) -> Run {
    let stdin_path = cwd.join("paste.sh");
    let (stdout_path, stderr_path) = (cwd.join("stdout.txt"), cwd.join("stderr.txt"));
    fs::write(&stdin_path, block).unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-i"])
        .current_dir(cwd)
        .stdin(File::open(&stdin_path).unwrap())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        // Its own process group, so a hung block is killed with its server.
        .process_group(0);
    for (k, _) in std::env::vars() {
        if k.starts_with("TRANSPONDER_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TRANSPONDER_BIN", env!("CARGO_BIN_EXE_transponder"))
        .env("TRANSPONDER_GATEWAY_PORT", ports[0].to_string())
        .env("TRANSPONDER_API_PORT", ports[1].to_string())
        .env("TRANSPONDER_ADMIN_PORT", ports[2].to_string())
        .env("NO_COLOR", "1");
    if let Some(dir) = python {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    let mut child = cmd.spawn().expect("spawn bash");
    let status = wait_or_kill_group(&mut child, BLOCK_TIMEOUT);
    let left_listening = ports
        .iter()
        .copied()
        .filter(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        .collect();
    // Whatever the block left behind (a server it failed to stop) goes now,
    // so that a failing run leaves nothing running after the test.
    kill_group(&child);
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap()).into_owned();
    Run {
        status: status.unwrap_or_else(|| {
            panic!(
                "the block did not finish within {BLOCK_TIMEOUT:?}\n---- stdout ----\n{}---- stderr ----\n{}",
                read(&stdout_path),
                read(&stderr_path)
            )
        }),
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
        left_listening,
    }
}

fn kill_group(child: &Child) {
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
}

/// Waits for `child`; past `timeout` kills its whole process group (the
/// server the block started too) and returns `None`.
fn wait_or_kill_group(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            kill_group(child);
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks one run and returns the message event the websocket printed.
#[track_caller]
fn check_run(run: &Run, which: &str) -> Value {
    assert!(
        run.left_listening.is_empty(),
        "{which} run left its server listening on {:?}: the block must stop it\n{}",
        run.left_listening,
        run.transcript()
    );
    assert!(
        run.status.success(),
        "{which} run of the README block failed:\n{}",
        run.transcript()
    );
    let frames = run.json_lines();
    let position = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        frames
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("{which} run printed no {what}:\n{}", run.transcript()))
    };
    let hello = position(&|v| v["type"] == "hello", "hello frame");
    let message = position(
        &|v| v["type"] == "message" && v["text"] == "hi" && v["ts"].is_string(),
        "message frame with text \"hi\" and a ts",
    );
    let goodbye = position(&|v| v["type"] == "goodbye", "goodbye frame");
    assert!(
        hello < message && message < goodbye,
        "{which} run: frames out of order (hello, message, goodbye expected):\n{}",
        run.transcript()
    );
    frames[message].clone()
}

#[test]
fn trying_it_block_works_twice_on_one_data_dir() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(repo.join("README.md")).expect("read README.md");
    let block = trying_it_block(&readme);
    require_tool("curl");
    require_tool("jq");
    let python = python_bin_dir(repo);

    // The reader's checkout: the block keeps its store in ./transponder-data.
    let cwd = fresh_dir();
    let ports = free_ports(3);

    let first = run_pasted(&block, &cwd, &ports, python.as_deref());
    let first_message = check_run(&first, "first");

    let second = run_pasted(&block, &cwd, &ports, python.as_deref());
    let second_message = check_run(&second, "second");

    assert_eq!(
        first_message["channel"],
        second_message["channel"],
        "the second run should find the #general of the first (same data dir):\n{}",
        second.transcript()
    );
    assert_ne!(
        first_message["user"], second_message["user"],
        "each run makes its own user"
    );
    let _ = fs::remove_dir_all(&cwd);
}

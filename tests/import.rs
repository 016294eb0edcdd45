//! `transponder channel import`: conversations imported offline are loaded
//! by the next server start like conversations created through the APIs —
//! their members' connections are subscribed, non-members are not, a
//! private one refuses outsiders, membership changes work on them — and a
//! bad input imports nothing.
//!
//! Every wait is bounded; nothing asserts speed.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::json;

fn cli(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_transponder"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run transponder");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Creates a user offline; returns its id (the middle of its token).
fn add_user(data_dir: &Path, name: &str) -> String {
    let out = cli(data_dir, &["user", "add", name], "");
    assert!(out.status.success(), "user add: {out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    token.trim().split('-').nth(1).unwrap().to_string()
}

fn data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("transponder-import-{}", unique()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn imported_conversations_behave_like_created_ones() {
    let dir = data_dir();
    let (alice, bob, carol) = (
        add_user(&dir, "alice"),
        add_user(&dir, "bob"),
        add_user(&dir, "carol"),
    );
    let ids_path = dir.join("ids.tsv");
    let input = format!(
        "# name,private,members\n\
         general,false,{alice} {bob}\n\
         \n\
         {{\"name\":\"secret\",\"private\":true,\"members\":[\"{alice}\"]}}\n\
         quiet\n"
    );
    let out = cli(
        &dir,
        &["channel", "import", "--ids", ids_path.to_str().unwrap()],
        &input,
    );
    assert!(out.status.success(), "import: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 3 conversations, 3 memberships"),
        "{out:?}"
    );
    let ids: Vec<(String, String)> = fs::read_to_string(&ids_path)
        .unwrap()
        .lines()
        .map(|l| {
            let (id, name) = l.split_once('\t').unwrap();
            (id.to_string(), name.to_string())
        })
        .collect();
    let names: Vec<&str> = ids.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["general", "secret", "quiet"]);
    let (general, secret, quiet) = (&ids[0].0, &ids[1].0, &ids[2].0);

    // Bad inputs: a taken name, an unknown user. Nothing of them lands.
    for (input, why) in [
        ("fresh,false\ngeneral,false\n", "line 2: name_taken"),
        (
            "fresh,false\nfresh2,false,U0NOBODY00\n",
            "line 2: user_not_found",
        ),
    ] {
        let bad_ids = dir.join("bad.tsv");
        let out = cli(
            &dir,
            &["channel", "import", "--ids", bad_ids.to_str().unwrap()],
            input,
        );
        assert!(!out.status.success(), "{input:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(why) && stderr.contains("nothing was imported"),
            "{stderr}"
        );
        assert!(!bad_ids.exists(), "no ids file after a failed import");
    }

    let server = Server::start_in(&dir, &[]);
    let admin = &server.admin;
    let conversations: u64 = admin.stats()["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["channels"].as_u64().unwrap())
        .sum();
    assert_eq!(conversations, 3, "the server loaded the imported ones");
    // "fresh" was rolled back with its failed import: the name is free.
    admin.create_channel("fresh");

    let mut a = server.connect(&alice).named("alice");
    let mut b = server.connect(&bob).named("bob");
    let mut c = server.connect(&carol).named("carol");
    admin.publish(general, json!({"type": "message", "text": "to general"}));
    for ws in [&mut a, &mut b] {
        let ev = ws.recv();
        assert_eq!(ev["text"], json!("to general"), "{}: {ev}", ws.name);
        assert_eq!(ev["channel"], json!(general), "{}: {ev}", ws.name);
    }
    admin.publish(secret, json!({"type": "message", "text": "to secret"}));
    assert_eq!(a.recv()["text"], json!("to secret"));
    expect_all_quiet(&mut [&mut a, &mut b, &mut c], QUIET);

    // Posting over the websocket: members may, outsiders of a private
    // conversation are told it does not exist.
    b.send_json(&json!({"id": 1, "type": "message", "channel": secret, "text": "in?"}));
    let err = b.recv();
    assert_eq!(err["ok"], json!(false), "{err}");
    assert_eq!(err["error"]["code"], json!(5), "channel_not_found: {err}");

    // Joining an imported conversation reaches the live connection.
    admin.add_member(quiet, &carol);
    let ev = c.recv();
    assert_eq!(ev["type"], json!("member_joined_channel"), "{ev}");
    assert_eq!(ev["channel"], json!(quiet), "{ev}");
    admin.publish(quiet, json!({"type": "message", "text": "to quiet"}));
    assert_eq!(c.recv()["text"], json!("to quiet"));
    expect_all_quiet(&mut [&mut a, &mut b, &mut c], QUIET);

    drop(server);
    let _ = fs::remove_dir_all(&dir);
}

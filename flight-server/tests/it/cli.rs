//! `weir sql` against a running server, output snapshotted.

use std::process::Command;

use crate::process::*;

fn weir_sql(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(WEIR)
        .args(["sql", "--server", url])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn redact_timing(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once(" in ") {
            Some((rows, time)) if time.ends_with(" s") => format!("{rows} in [time]"),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_runs_commands_files_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(&dir.path().join("data"));
    let url = server.url.clone();

    let (ok, out, _) = weir_sql(
        &url,
        &[
            "-c",
            "CREATE TABLE events (id BIGINT NOT NULL, round BIGINT NOT NULL); SHOW TABLES",
        ],
    );
    assert!(ok);
    insta::assert_snapshot!(out, @"
    OK
    +------------+
    | table_name |
    +------------+
    | events     |
    +------------+
    ");

    let client = weir_client::Client::connect(&url).await.unwrap();
    let mut stream = client
        .open_stream(
            "events",
            ids_schema(),
            weir_client::StreamOptions::default(),
        )
        .await
        .unwrap();
    stream.send(ids_batch(1, 3, 7)).await.unwrap();
    stream.close().await.unwrap();

    let (ok, out, _) = weir_sql(
        &url,
        &["--timing", "-c", "SELECT * FROM events ORDER BY id"],
    );
    assert!(ok);
    insta::assert_snapshot!(redact_timing(&out), @"
    +----+-------+
    | id | round |
    +----+-------+
    | 1  | 7     |
    | 2  | 7     |
    | 3  | 7     |
    +----+-------+
    3 rows in [time]
    ");

    let (ok, out, _) = weir_sql(
        &url,
        &["--format", "csv", "-c", "SELECT id FROM events ORDER BY id"],
    );
    assert!(ok);
    insta::assert_snapshot!(out, @"
    id
    1
    2
    3
    ");

    let script = dir.path().join("q.sql");
    std::fs::write(
        &script,
        "-- a comment; with a semicolon\nSELECT count(*) AS n FROM events;\nDESCRIBE events;\n",
    )
    .unwrap();
    let (ok, out, _) = weir_sql(&url, &["--format", "json", "-f", script.to_str().unwrap()]);
    assert!(ok);
    insta::assert_snapshot!(out, @r#"
    {"n":3}
    {"column_name":"id","data_type":"Int64","is_nullable":"NO"}
    {"column_name":"round","data_type":"Int64","is_nullable":"NO"}
    "#);

    let (ok, _, err) = weir_sql(&url, &["-c", "SELECT nope FROM events"]);
    assert!(!ok, "a failed statement exits non-zero");
    assert!(err.contains("nope"), "{err}");

    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_takes_statements_over_lines_and_backslash_commands() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(&dir.path().join("data"));
    let mut child = Command::new(WEIR)
        .args(["sql", "--server", &server.url])
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = "CREATE TABLE t (id BIGINT NOT NULL, site VARCHAR);\n\
                 INSERT INTO t VALUES (1, 'a'),\n\
                 (2, 'b');\n\
                 \\timing off\n\
                 \\format csv\n\
                 SELECT id, site\n  FROM t ORDER BY id;\n\
                 \\d\n\
                 \\format json\n\
                 SELECT count(*) AS n FROM t;\n\
                 \\x\n\
                 \\q\n\
                 SELECT 'never run';\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let out = String::from_utf8(output.stdout).unwrap();
    let err = String::from_utf8(output.stderr).unwrap();
    for expected in [
        "OK\n",
        "| count |",
        "| 2     |",
        "timing off",
        "id,site\n1,a\n2,b\n",
        "table_name\nt\n",
        "{\"n\":2}\n",
    ] {
        assert!(out.contains(expected), "{expected:?} in:\n{out}");
    }
    assert!(!out.contains("never run"), "{out}");
    assert!(err.contains("unknown command \"\\\\x\""), "{err}");
    // The history was saved under HOME.
    let history = std::fs::read_to_string(dir.path().join(".weir_sql_history")).unwrap();
    assert!(history.contains("INSERT INTO t VALUES"), "{history}");
}

//! `weir sql`: the bundled SQL client.
//!
//! It speaks FlightSQL to a running server, so it sees rows the moment the
//! server acknowledges them. Three ways to use it:
//!
//! - `weir sql`: an interactive prompt with history (statements end with
//!   `;`; `\d` lists tables, `\d NAME` describes one, `\q` quits);
//! - `weir sql -c "SELECT ..."`: run the statements given and exit;
//! - `weir sql -f queries.sql`: run a file of statements and exit.
//!
//! Output is an aligned table (default), CSV or JSON lines; `--timing`
//! prints the row count and time of each statement.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::sql::parser::DFParser;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, Result};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// An aligned text table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format {other:?}: use table, csv or json")),
        }
    }
}

/// What to run and how to print it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server, e.g. `http://127.0.0.1:50051`.
    pub server: String,
    /// Statements given with `-c`.
    pub command: Option<String>,
    /// A file of statements given with `-f`.
    pub file: Option<PathBuf>,
    /// Output format.
    pub format: Format,
    /// Print row counts and times.
    pub timing: bool,
    /// A bearer token from the server's token endpoint, for a server with
    /// authentication on.
    pub token: Option<String>,
}

/// A FlightSQL connection that runs statements and prints their results.
pub struct Client {
    flight: FlightSqlServiceClient<Channel>,
    format: Format,
    timing: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("format", &self.format)
            .finish()
    }
}

/// Runs the CLI; returns false if any statement failed.
pub async fn run(options: Options) -> Result<bool> {
    let mut client = Client::connect(&options.server, options.format, options.timing).await?;
    if let Some(token) = options.token {
        client.flight.set_token(token);
    }
    let mut out = std::io::stdout().lock();
    if let Some(sql) = &options.command {
        return client.run_script(sql, &mut out).await;
    }
    if let Some(path) = &options.file {
        let sql = std::fs::read_to_string(path)?;
        return client.run_script(&sql, &mut out).await;
    }
    drop(out);
    client.timing = true;
    client.repl().await
}

impl Client {
    /// Connects to a server.
    pub async fn connect(server: &str, format: Format, timing: bool) -> Result<Self> {
        let channel = Endpoint::from_shared(server.to_string())
            .map_err(|e| Error::Server(format!("invalid server address {server:?}: {e}")))?
            .connect()
            .await
            .map_err(|e| Error::Server(format!("cannot connect to {server}: {e}")))?;
        Ok(Self {
            flight: FlightSqlServiceClient::new(channel),
            format,
            timing,
        })
    }

    /// Runs every statement of `sql`, printing results to `out`; stops at the
    /// first failure, which is printed to stderr.
    pub async fn run_script(&mut self, sql: &str, out: &mut impl Write) -> Result<bool> {
        let statements = match split_statements(sql) {
            Ok(statements) => statements,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(false);
            }
        };
        for statement in statements {
            if let Err(e) = self.run_one(&statement, out).await {
                eprintln!("error: {e}");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs one statement and prints its result.
    pub async fn run_one(&mut self, sql: &str, out: &mut impl Write) -> Result<()> {
        let started = Instant::now();
        let (schema, batches) = self.query(sql).await?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if schema.fields().is_empty() {
            writeln!(out, "OK")?;
        } else {
            print_batches(&schema, &batches, self.format, out)?;
        }
        if self.timing {
            writeln!(out, "{}", timing_line(rows, started.elapsed()))?;
        }
        Ok(())
    }

    /// Runs one statement and returns its schema and rows.
    pub async fn query(&mut self, sql: &str) -> Result<(Schema, Vec<RecordBatch>)> {
        let info = self
            .flight
            .execute(sql.to_string(), None)
            .await
            .map_err(server_error)?;
        let schema = info.clone().try_decode_schema().map_err(server_error)?;
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else {
                continue;
            };
            let stream = self.flight.do_get(ticket).await.map_err(server_error)?;
            batches.extend(stream.try_collect::<Vec<_>>().await.map_err(server_error)?);
        }
        Ok((schema, batches))
    }

    async fn repl(&mut self) -> Result<bool> {
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        let history =
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".weir_sql_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                "weir> "
            } else {
                "  ... "
            };
            let line = match editor.readline(prompt) {
                Ok(line) => line,
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    buffer.clear();
                    continue;
                }
                Err(_) => break,
            };
            let trimmed = line.trim();
            if buffer.is_empty()
                && let Some(sql) = meta_command(trimmed)
            {
                let _ = editor.add_history_entry(trimmed);
                match sql {
                    Meta::Quit => break,
                    Meta::Sql(sql) => {
                        let mut out = std::io::stdout().lock();
                        if let Err(e) = self.run_one(&sql, &mut out).await {
                            eprintln!("error: {e}");
                        }
                    }
                }
                continue;
            }
            buffer.push_str(&line);
            buffer.push('\n');
            if !trimmed.ends_with(';') {
                continue;
            }
            let _ = editor.add_history_entry(buffer.trim());
            let sql = std::mem::take(&mut buffer);
            let mut out = std::io::stdout().lock();
            let _ = self.run_script(&sql, &mut out).await;
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(true)
    }
}

enum Meta {
    Quit,
    Sql(String),
}

fn meta_command(line: &str) -> Option<Meta> {
    match line {
        "\\q" | "quit" | "exit" => Some(Meta::Quit),
        "\\d" => Some(Meta::Sql("SHOW TABLES".into())),
        _ => line
            .strip_prefix("\\d ")
            .map(|name| Meta::Sql(format!("DESCRIBE {}", name.trim()))),
    }
}

/// Splits a script into statements with DataFusion's parser, so that `;`
/// inside strings and comments does not split.
pub fn split_statements(sql: &str) -> Result<Vec<String>> {
    let statements = DFParser::parse_sql(sql)?;
    Ok(statements.iter().map(ToString::to_string).collect())
}

/// Prints `batches` in `format`.
pub fn print_batches(
    schema: &Schema,
    batches: &[RecordBatch],
    format: Format,
    out: &mut impl Write,
) -> Result<()> {
    match format {
        Format::Table => {
            let text = if batches.is_empty() {
                let empty = RecordBatch::new_empty(std::sync::Arc::new(schema.clone()));
                arrow::util::pretty::pretty_format_batches(&[empty])
            } else {
                arrow::util::pretty::pretty_format_batches(batches)
            }
            .map_err(datafusion::error::DataFusionError::from)?;
            writeln!(out, "{text}")?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in batches {
                writer
                    .write(batch)
                    .map_err(datafusion::error::DataFusionError::from)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            writer
                .write_batches(&batches.iter().collect::<Vec<_>>())
                .map_err(datafusion::error::DataFusionError::from)?;
            writer
                .finish()
                .map_err(datafusion::error::DataFusionError::from)?;
        }
    }
    Ok(())
}

fn timing_line(rows: usize, elapsed: Duration) -> String {
    let noun = if rows == 1 { "row" } else { "rows" };
    format!("{rows} {noun} in {:.3} s", elapsed.as_secs_f64())
}

fn server_error(e: impl std::fmt::Display) -> Error {
    Error::Server(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as _),
            (
                "site",
                Arc::new(StringArray::from(vec![Some("a,b"), None])) as _,
            ),
        ])
        .unwrap()
    }

    fn render(format: Format) -> String {
        let batch = batch();
        let mut out = Vec::new();
        print_batches(&batch.schema(), &[batch], format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats() {
        insta::assert_snapshot!(render(Format::Table), @r"
        +----+------+
        | id | site |
        +----+------+
        | 1  | a,b  |
        | 2  |      |
        +----+------+
        ");
        insta::assert_snapshot!(render(Format::Csv), @r#"
        id,site
        1,"a,b"
        2,
        "#);
        insta::assert_snapshot!(render(Format::Json), @r#"
        {"id":1,"site":"a,b"}
        {"id":2}
        "#);
    }

    #[test]
    fn splits_statements_but_not_strings() {
        let statements = split_statements("SELECT 'a;b'; SHOW TABLES;").unwrap();
        assert_eq!(statements, vec!["SELECT 'a;b'", "SHOW TABLES"]);
        assert!(split_statements("SELEC 1").is_err());
    }

    #[test]
    fn meta_commands() {
        assert!(matches!(meta_command("\\q"), Some(Meta::Quit)));
        assert!(matches!(meta_command("\\d t"), Some(Meta::Sql(s)) if s == "DESCRIBE t"));
        assert!(meta_command("SELECT 1;").is_none());
    }

    #[test]
    fn timing_is_pluralised() {
        assert_eq!(
            timing_line(1, Duration::from_millis(1500)),
            "1 row in 1.500 s"
        );
        assert_eq!(timing_line(0, Duration::ZERO), "0 rows in 0.000 s");
    }
}

//! `weir sql`: the bundled SQL client, on `weir-client`'s FlightSQL API.
//!
//! It sees rows the moment the server acknowledges them. Three ways to use
//! it:
//!
//! - `weir sql`: an interactive prompt with history, tab completion of
//!   keywords, table and column names, and statements over several lines
//!   (each ends with `;`); `\?` lists the backslash commands;
//! - `weir sql -c "SELECT ..."`: run the statements given and exit;
//! - `weir sql -f queries.sql`: run a file of statements and exit.
//!
//! Output is an aligned table (default), CSV or JSON lines; CSV and JSON
//! are written batch by batch as the rows arrive. `--timing` prints the
//! row count and time of each statement.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use datafusion::sql::parser::DFParser;
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use weir_client::{ConnectOptions, SqlClient};

/// What can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] weir_client::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error("{0}")]
    Usage(String),
}

type Result<T, E = CliError> = std::result::Result<T, E>;

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
    /// The server: `http://host:port`, or `https://host:port` for TLS.
    pub server: String,
    /// Statements given with `-c`.
    pub command: Option<String>,
    /// A file of statements given with `-f`.
    pub file: Option<PathBuf>,
    /// Output format.
    pub format: Format,
    /// Print row counts and times.
    pub timing: bool,
    /// A bearer token from the server's token endpoint.
    pub token: Option<String>,
    /// A PEM CA certificate to trust for an `https://` server.
    pub ca_file: Option<PathBuf>,
}

/// Runs the CLI; returns false if any statement failed.
pub async fn run(options: Options) -> Result<bool> {
    let ca_pem = match &options.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            CliError::Usage(format!("cannot read --ca-file {}: {e}", path.display()))
        })?),
        None => None,
    };
    let connect = ConnectOptions {
        token: options.token.clone(),
        ca_pem,
    };
    let mut session = Session {
        client: SqlClient::connect(&options.server, &connect).await?,
        format: options.format,
        timing: options.timing,
    };
    let mut out = std::io::stdout().lock();
    if let Some(sql) = &options.command {
        return session.run_script(sql, &mut out).await;
    }
    if let Some(path) = &options.file {
        let sql = std::fs::read_to_string(path)?;
        return session.run_script(&sql, &mut out).await;
    }
    drop(out);
    session.repl().await
}

/// A connection and how to print what it answers.
struct Session {
    client: SqlClient,
    format: Format,
    timing: bool,
}

impl Session {
    /// Runs every statement of `sql`, printing results to `out`; stops at
    /// the first failure, which is printed to stderr.
    async fn run_script(&mut self, sql: &str, out: &mut impl Write) -> Result<bool> {
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

    /// Runs one statement and prints its result as it arrives.
    async fn run_one(&mut self, sql: &str, out: &mut impl Write) -> Result<()> {
        let started = Instant::now();
        let mut rows = self.client.query(sql).await?;
        let schema = std::sync::Arc::clone(rows.schema());
        let mut count = 0;
        if schema.fields().is_empty() {
            while rows.next_batch().await?.is_some() {}
            writeln!(out, "OK")?;
        } else {
            let mut printer = Printer::new(self.format, &schema, out);
            while let Some(batch) = rows.next_batch().await? {
                count += batch.num_rows();
                printer.write(batch)?;
            }
            printer.finish()?;
        }
        if self.timing {
            writeln!(out, "{}", timing_line(count, started.elapsed()))?;
        }
        Ok(())
    }

    async fn repl(&mut self) -> Result<bool> {
        let mut editor = rustyline::Editor::<SqlHelper, DefaultHistory>::new()
            .map_err(|e| CliError::Io(std::io::Error::other(e.to_string())))?;
        editor.set_helper(Some(SqlHelper::default()));
        self.refresh_names(&mut editor).await;
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
            if buffer.is_empty() && (trimmed.starts_with('\\') || is_quit(trimmed)) {
                let _ = editor.add_history_entry(trimmed);
                let mut out = std::io::stdout().lock();
                match meta_command(trimmed) {
                    Ok(Meta::Quit) => break,
                    Ok(Meta::Sql(sql)) => {
                        if let Err(e) = self.run_one(&sql, &mut out).await {
                            eprintln!("error: {e}");
                        }
                    }
                    Ok(Meta::Timing(on)) => {
                        self.timing = on.unwrap_or(!self.timing);
                        let state = if self.timing { "on" } else { "off" };
                        let _ = writeln!(out, "timing {state}");
                    }
                    Ok(Meta::Format(format)) => self.format = format,
                    Ok(Meta::Help) => {
                        let _ = write!(out, "{HELP}");
                    }
                    Err(e) => eprintln!("error: {e}"),
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
            drop(out);
            if changes_tables(&sql) {
                self.refresh_names(&mut editor).await;
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(true)
    }

    /// Reads the table and column names completion offers. Without them
    /// (a server that does not list tables), keywords still complete.
    async fn refresh_names(&mut self, editor: &mut rustyline::Editor<SqlHelper, DefaultHistory>) {
        let Ok(tables) = self.client.tables().await else {
            return;
        };
        if let Some(helper) = editor.helper_mut() {
            helper.names = tables
                .into_iter()
                .map(|t| {
                    let columns = t.columns.fields().iter().map(|f| f.name().clone());
                    (t.name, columns.collect())
                })
                .collect();
        }
    }
}

const HELP: &str = "\
  \\d             list tables
  \\d NAME        describe a table
  \\timing [on|off]  print row counts and times
  \\format table|csv|json
  \\q             quit (also quit, exit)
Statements end with ';' and may span lines; Tab completes keywords and names.
";

/// Writes a result in one format, batch by batch where the format allows.
struct Printer<'a, W: Write> {
    format: Format,
    schema: &'a Schema,
    out: &'a mut W,
    /// Table format: the batches so far (a table is aligned over all rows).
    held: Vec<RecordBatch>,
    wrote_header: bool,
}

impl<'a, W: Write> Printer<'a, W> {
    fn new(format: Format, schema: &'a Schema, out: &'a mut W) -> Self {
        Self {
            format,
            schema,
            out,
            held: Vec::new(),
            wrote_header: false,
        }
    }

    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        match self.format {
            Format::Table => self.held.push(batch),
            Format::Csv => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(!self.wrote_header)
                    .build(&mut *self.out);
                writer.write(&batch)?;
                self.wrote_header = true;
            }
            Format::Json => {
                let mut writer = arrow::json::LineDelimitedWriter::new(&mut *self.out);
                writer.write(&batch)?;
                writer.finish()?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self.format {
            Format::Table => {
                let text = if self.held.is_empty() {
                    let empty = RecordBatch::new_empty(std::sync::Arc::new(self.schema.clone()));
                    arrow::util::pretty::pretty_format_batches(&[empty])?
                } else {
                    arrow::util::pretty::pretty_format_batches(&self.held)?
                };
                writeln!(self.out, "{text}")?;
            }
            Format::Csv if !self.wrote_header => {
                let names: Vec<_> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                writeln!(self.out, "{}", names.join(","))?;
            }
            Format::Csv | Format::Json => {}
        }
        Ok(())
    }
}

/// A backslash command of the prompt.
#[derive(Debug, PartialEq)]
enum Meta {
    Quit,
    Sql(String),
    /// `None` toggles.
    Timing(Option<bool>),
    Format(Format),
    Help,
}

fn is_quit(line: &str) -> bool {
    matches!(line, "quit" | "exit")
}

fn meta_command(line: &str) -> Result<Meta> {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    match (command, rest.as_slice()) {
        ("\\q" | "quit" | "exit", []) => Ok(Meta::Quit),
        ("\\d", []) => Ok(Meta::Sql("SHOW TABLES".into())),
        ("\\d", [name]) => Ok(Meta::Sql(format!("DESCRIBE {name}"))),
        ("\\timing", []) => Ok(Meta::Timing(None)),
        ("\\timing", ["on"]) => Ok(Meta::Timing(Some(true))),
        ("\\timing", ["off"]) => Ok(Meta::Timing(Some(false))),
        ("\\format", [format]) => format.parse().map(Meta::Format).map_err(CliError::Usage),
        ("\\?" | "\\h" | "\\help", []) => Ok(Meta::Help),
        _ => Err(CliError::Usage(format!(
            "unknown command {line:?}; \\? lists the commands"
        ))),
    }
}

/// True if `sql` may have created or dropped a table.
fn changes_tables(sql: &str) -> bool {
    let upper = sql.to_uppercase();
    upper.contains("CREATE") || upper.contains("DROP")
}

/// Splits a script into statements with DataFusion's parser, so that `;`
/// inside strings and comments does not split.
fn split_statements(sql: &str) -> Result<Vec<String>, datafusion::error::DataFusionError> {
    let statements = DFParser::parse_sql(sql)?;
    Ok(statements.iter().map(ToString::to_string).collect())
}

fn timing_line(rows: usize, elapsed: Duration) -> String {
    let noun = if rows == 1 { "row" } else { "rows" };
    format!("{rows} {noun} in {:.3} s", elapsed.as_secs_f64())
}

/// The words SQL completion offers besides names.
const KEYWORDS: &[&str] = &[
    "ALL",
    "AND",
    "AS",
    "ASC",
    "AVG",
    "BETWEEN",
    "BIGINT",
    "BOOLEAN",
    "BY",
    "CASE",
    "CAST",
    "COUNT",
    "CREATE",
    "CROSS",
    "DATE",
    "DATE_TRUNC",
    "DESC",
    "DESCRIBE",
    "DISTINCT",
    "DOUBLE",
    "DROP",
    "ELSE",
    "END",
    "EXISTS",
    "EXPLAIN",
    "FALSE",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "IF",
    "ILIKE",
    "IN",
    "INNER",
    "INSERT",
    "INT",
    "INTERVAL",
    "INTO",
    "IS",
    "JOIN",
    "LEFT",
    "LIKE",
    "LIMIT",
    "MAX",
    "MIN",
    "NOT",
    "NOW",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "RIGHT",
    "SELECT",
    "SHOW",
    "SUM",
    "TABLE",
    "TABLES",
    "THEN",
    "TIMESTAMP",
    "TRUE",
    "UNION",
    "VALUES",
    "VARCHAR",
    "WHEN",
    "WHERE",
    "WITH",
];

/// Completion for the prompt: keywords, table names, and column names of
/// the tables the line mentions (of every table when it names none;
/// after `table.`, of that table).
#[derive(Default)]
struct SqlHelper {
    /// Each table's columns.
    names: BTreeMap<String, Vec<String>>,
}

impl SqlHelper {
    fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let prefix = &before[start..];
        if prefix.is_empty() && !before.ends_with('.') {
            return (start, Vec::new());
        }
        let matches = |word: &str| {
            word.len() >= prefix.len()
                && word.is_char_boundary(prefix.len())
                && word[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        // `table.col`: that table's columns only.
        if let Some(qualifier) = before[..start].strip_suffix('.') {
            let table_start = qualifier
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let table = &qualifier[table_start..];
            let columns = self.names.get(table).cloned().unwrap_or_default();
            return (start, columns.into_iter().filter(|c| matches(c)).collect());
        }
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        let mentioned: Vec<&Vec<String>> = self
            .names
            .iter()
            .filter(|(table, _)| words.contains(&table.as_str()))
            .map(|(_, columns)| columns)
            .collect();
        let columns: Vec<&String> = if mentioned.is_empty() {
            self.names.values().flatten().collect()
        } else {
            mentioned.into_iter().flatten().collect()
        };
        let lower = prefix.chars().all(|c| !c.is_uppercase());
        let mut found: Vec<String> = KEYWORDS
            .iter()
            .filter(|k| matches(k))
            .map(|k| {
                if lower {
                    k.to_lowercase()
                } else {
                    k.to_string()
                }
            })
            .chain(self.names.keys().filter(|t| matches(t)).cloned())
            .chain(columns.into_iter().filter(|c| matches(c)).cloned())
            .collect();
        found.sort();
        found.dedup();
        (start, found)
    }
}

impl Completer for SqlHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.candidates(line, pos))
    }
}

impl Hinter for SqlHelper {
    type Hint = String;
}
impl Highlighter for SqlHelper {}
impl Validator for SqlHelper {}
impl rustyline::Helper for SqlHelper {}

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

    /// `batches` printed in `format`, as they would arrive one by one.
    fn render(format: Format, batches: Vec<RecordBatch>) -> String {
        let schema = batch().schema();
        let mut out = Vec::new();
        let mut printer = Printer::new(format, &schema, &mut out);
        for batch in batches {
            printer.write(batch).unwrap();
        }
        printer.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_print_batch_by_batch_and_empty_results_keep_their_header() {
        insta::assert_snapshot!(render(Format::Table, vec![batch(), batch()]), @r"
        +----+------+
        | id | site |
        +----+------+
        | 1  | a,b  |
        | 2  |      |
        | 1  | a,b  |
        | 2  |      |
        +----+------+
        ");
        insta::assert_snapshot!(render(Format::Csv, vec![batch(), batch()]), @r#"
        id,site
        1,"a,b"
        2,
        1,"a,b"
        2,
        "#);
        insta::assert_snapshot!(render(Format::Json, vec![batch()]), @r#"
        {"id":1,"site":"a,b"}
        {"id":2}
        "#);
        assert_eq!(render(Format::Csv, vec![]), "id,site\n");
        assert_eq!(render(Format::Json, vec![]), "");
        assert!(render(Format::Table, vec![]).contains("| id | site |"));
    }

    #[test]
    fn splits_statements_but_not_strings() {
        let statements = split_statements("SELECT 'a;b'; SHOW TABLES;").unwrap();
        assert_eq!(statements, vec!["SELECT 'a;b'", "SHOW TABLES"]);
        assert!(split_statements("SELEC 1").is_err());
    }

    #[test]
    fn meta_commands() {
        assert_eq!(meta_command("\\q").unwrap(), Meta::Quit);
        assert_eq!(meta_command("exit").unwrap(), Meta::Quit);
        assert_eq!(
            meta_command("\\d t").unwrap(),
            Meta::Sql("DESCRIBE t".into())
        );
        assert_eq!(meta_command("\\timing").unwrap(), Meta::Timing(None));
        assert_eq!(
            meta_command("\\timing off").unwrap(),
            Meta::Timing(Some(false))
        );
        assert_eq!(
            meta_command("\\format csv").unwrap(),
            Meta::Format(Format::Csv)
        );
        let err = meta_command("\\format xml").unwrap_err().to_string();
        assert!(err.contains("use table, csv or json"), "{err}");
        let err = meta_command("\\x").unwrap_err().to_string();
        assert!(err.contains("\\? lists"), "{err}");
    }

    #[test]
    fn completes_keywords_tables_and_the_columns_of_the_tables_named() {
        let helper = SqlHelper {
            names: BTreeMap::from([
                ("sensors".into(), vec!["id".into(), "site".into()]),
                ("sites".into(), vec!["name".into(), "region".into()]),
            ]),
        };
        let complete = |line: &str| helper.candidates(line, line.len());
        assert_eq!(complete("SEL"), (0, vec!["SELECT".to_string()]));
        assert_eq!(complete("sel"), (0, vec!["select".to_string()]));
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            complete("SELECT * FROM se"),
            (14, words(&["select", "sensors"]))
        );
        assert_eq!(
            complete("SELECT * FROM SE"),
            (14, words(&["SELECT", "sensors"]))
        );
        // Columns of the table the line names, not of the others.
        assert_eq!(
            helper.candidates("SELECT si FROM sensors", 9),
            (7, words(&["site", "sites"]))
        );
        assert_eq!(
            helper.candidates("SELECT r FROM sites", 8),
            (7, words(&["region", "right"]))
        );
        assert_eq!(
            helper.candidates("SELECT n FROM sensors", 8),
            (7, words(&["not", "now", "null"]))
        );
        // After `table.`: that table's columns.
        assert_eq!(
            complete("SELECT sensors."),
            (15, vec!["id".to_string(), "site".to_string()])
        );
        assert_eq!(complete("SELECT "), (7, vec![]));
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

//! The diagrams of `docs/diagrams/` against PlantUML and the code. Every
//! `.puml` must render (rendered as `scripts/diagrams` renders them, so a
//! syntax error fails here too) and have its committed SVG, made from the
//! `.puml` as it is now; and every name a diagram uses must be real:
//! routes, `[section] key` settings, `src/…` paths, metric series,
//! `X-Auth-*` headers, `hf:` Redis keys, `Type::item` names, and the
//! schema's tables and columns. A rename in the code then fails here
//! instead of leaving a picture quietly wrong.

use super::{documented_keys, emitted_series, repo, rust_files, series_named_in};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `scripts/diagrams`'s flags: stop at the first error (exit status 200,
/// the file and line named), no machine details in the SVG.
const FLAGS: [&str; 3] = ["-tsvg", "-nometadata", "-failfast"];

/// What PlantUML draws into a picture instead of failing.
const DRAWN_ERRORS: [&str; 4] = [
    "Syntax Error",
    "Cannot find Graphviz",
    "Dot executable",
    "An error has occured",
];

fn sources() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("docs/diagrams"))
        .expect("docs/diagrams")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "puml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no diagrams in docs/diagrams");
    files
}

/// Renders `files` into `out`: Ok, or what PlantUML said.
fn render(files: &[PathBuf], out: &Path) -> Result<(), String> {
    let run = Command::new("plantuml")
        .args(FLAGS)
        .arg("-o")
        .arg(out)
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "plantuml is needed to check docs/diagrams ({e}): install Debian's `plantuml` \
                 and `graphviz` packages (scripts/diagrams and scripts/test do so when run \
                 as root) or put plantuml on PATH"
            )
        });
    if !run.status.success() {
        return Err(format!(
            "plantuml exited with {}:\n{}{}",
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    for file in files {
        let name = file.file_stem().expect("stem").to_string_lossy();
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg")))
            .map_err(|e| format!("{name}.svg not rendered: {e}"))?;
        if let Some(error) = DRAWN_ERRORS.iter().find(|e| svg.contains(*e)) {
            return Err(format!("{name}.svg shows an error: {error}"));
        }
    }
    Ok(())
}

#[test]
fn diagrams_render_and_their_svgs_are_current_and_linked() {
    let files = sources();
    let architecture = std::fs::read_to_string(repo("docs/architecture.md")).expect("doc");
    let out = tempfile::tempdir().expect("tempdir");
    if let Err(e) = render(&files, out.path()) {
        panic!("a diagram does not render:\n{e}");
    }
    for file in &files {
        let name = file.file_stem().expect("stem").to_string_lossy();
        let text = std::fs::read_to_string(file).expect("puml");
        let marker = format!(
            "<!-- rendered from {name}.puml sha256 {} -->",
            holdfast::auth::sha256_hex(&text)
        );
        let committed = std::fs::read_to_string(file.with_extension("svg")).unwrap_or_default();
        assert!(
            committed.lines().any(|l| l == marker),
            "docs/diagrams/{name}.svg is missing or older than its .puml: \
             run scripts/diagrams --update and commit it"
        );
        assert!(
            architecture.contains(&format!("(diagrams/{name}.svg)")),
            "docs/architecture.md does not link diagrams/{name}.svg"
        );
    }
}

#[test]
fn a_broken_diagram_fails_the_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.puml");
    std::fs::write(
        &broken,
        "@startuml\nA -> B : fine\nthis is -> not :: a diagram ->>\n@enduml\n",
    )
    .expect("write");
    let out = dir.path().join("out");
    assert!(
        render(&[broken], &out).is_err(),
        "plantuml accepted a broken diagram: the render check would pass anything"
    );
}

/// Every route the routers declare, as they register them (each with its
/// OpenAPI documentation, `http::route_paths`).
fn routes() -> Vec<String> {
    let routes = holdfast::http::route_paths();
    assert!(
        routes.iter().any(|r| r == "/api/v1/auth/verify"),
        "{routes:?}"
    );
    routes
}

/// Whether `path` (placeholders as `{x}` or `<x>`; `prefix`: only its
/// beginning) names a route.
fn is_route(routes: &[String], path: &str, prefix: bool) -> bool {
    let wild = |s: &str| s.starts_with('{') || s.starts_with('<');
    let want: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    routes.iter().any(|route| {
        let have: Vec<&str> = route.split('/').collect();
        (have.len() == want.len() || (prefix && have.len() > want.len()))
            && want
                .iter()
                .zip(&have)
                .all(|(w, h)| w == h || (wild(w) && wild(h)))
    })
}

/// The token starting at `at`: characters of a path, key or name.
fn token_at(text: &str, at: usize) -> &str {
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_./{}<>:".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].trim_end_matches(['.', ':'])
}

/// Whether the character before `at` ends a word (or there is none).
fn starts_word(text: &str, at: usize) -> bool {
    !text[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        starts_word(text, at)
            && !text[at + word.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// What the names are checked against, read once.
struct Code {
    routes: Vec<String>,
    keys: BTreeSet<String>,
    series: BTreeSet<String>,
    source: String,
    headers: String,
}

impl Code {
    fn read() -> Self {
        let source = rust_files(&repo("src"))
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("source"))
            .collect::<Vec<_>>()
            .join("\n");
        Self {
            routes: routes(),
            keys: documented_keys().into_keys().collect(),
            series: emitted_series(),
            source,
            headers: std::fs::read_to_string(repo("src/http/auth.rs")).expect("auth.rs"),
        }
    }

    /// Every name in `text` that the code or the documents do not have.
    fn problems(&self, text: &str) -> Vec<String> {
        let text = text.replace("\\n", "\n");
        let mut bad = Vec::new();
        self.paths(&text, &mut bad);
        self.settings(&text, &mut bad);
        for dir in [
            "src/",
            "migrations/",
            "docs/",
            "tests/",
            "benches/",
            "scripts/",
        ] {
            for (at, _) in text.match_indices(dir) {
                let file = token_at(&text, at).trim_end_matches('/');
                if starts_word(&text, at) && !repo(file).exists() {
                    bad.push(format!("no such file: {file}"));
                }
            }
        }
        for name in series_named_in(&text) {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            if !self.series.contains(base) {
                bad.push(format!("no such metric: {name}"));
            }
        }
        for (at, _) in text.match_indices("X-Auth-") {
            let header = token_at(&text, at).to_ascii_lowercase();
            if !self.headers.contains(&format!("\"{header}\"")) {
                bad.push(format!("no such header: {header}"));
            }
        }
        for (at, _) in text.match_indices("hf:") {
            let key: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == ':')
                .collect();
            if !self.source.contains(&format!("\"{key}")) {
                bad.push(format!("no such Redis key: {key}"));
            }
        }
        self.code_names(&text, &mut bad);
        bad
    }

    /// `/api/v1…`, `/.well-known/…`, `METHOD /path` and a bare `/livez`.
    fn paths(&self, text: &str, bad: &mut Vec<String>) {
        let mut found: Vec<usize> = ["/api/v1", "/.well-known/"]
            .iter()
            .flat_map(|p| text.match_indices(p).map(|(at, _)| at))
            .collect();
        for method in ["GET /", "POST /", "PUT /", "PATCH /", "DELETE /"] {
            found.extend(
                text.match_indices(method)
                    .map(|(at, _)| at + method.len() - 1),
            );
        }
        for (at, _) in text.match_indices('/') {
            let word = token_at(text, at);
            let bare = word.len() > 1 && word[1..].bytes().all(|b| b.is_ascii_lowercase());
            let before = text[..at].chars().next_back();
            if bare && before.is_none_or(|c| " \n(,".contains(c)) {
                found.push(at);
            }
        }
        found.sort_unstable();
        found.dedup();
        for at in found {
            let path = token_at(text, at);
            let prefix = text[at + path.len()..].starts_with(['…', '*']);
            if !is_route(&self.routes, path, prefix) {
                bad.push(format!("no such route: {path}"));
            }
        }
    }

    /// `[section] key` and `[[idp]] key` must be documented settings.
    fn settings(&self, text: &str, bad: &mut Vec<String>) {
        for (at, _) in text.match_indices('[') {
            if text[..at].ends_with('[') {
                continue;
            }
            let rest = text[at..].trim_start_matches('[');
            let Some((section, after)) = rest.split_once(']') else {
                continue;
            };
            let Some(after) = after.trim_start_matches(']').strip_prefix(' ') else {
                continue;
            };
            let key: String = after
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let section_ok = !section.is_empty()
                && section
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.');
            let key_ok = key.starts_with(|c: char| c.is_ascii_lowercase());
            if section_ok && key_ok && !self.keys.contains(&format!("{section}.{key}")) {
                bad.push(format!("no such setting: [{section}] {key}"));
            }
        }
    }

    /// `Type::Variant` needs both words in `src/`; `Type::method` needs
    /// the type and a `fn method`.
    fn code_names(&self, text: &str, bad: &mut Vec<String>) {
        for (at, _) in text.match_indices("::") {
            let head: String = text[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let item = token_at(text, at + 2)
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default();
            if !head.starts_with(|c: char| c.is_ascii_uppercase()) || item.is_empty() {
                continue;
            }
            let item_ok = if item.starts_with(|c: char| c.is_ascii_lowercase()) {
                has_word(&self.source, &format!("fn {item}"))
            } else {
                has_word(&self.source, item)
            };
            if !has_word(&self.source, &head) || !item_ok {
                bad.push(format!("no such code name: {head}::{item}"));
            }
        }
    }
}

#[test]
fn diagrams_name_only_routes_settings_files_and_series_that_exist() {
    let code = Code::read();
    let mut bad = BTreeMap::new();
    for file in sources() {
        let text = std::fs::read_to_string(&file).expect("puml");
        let problems = code.problems(&text);
        if !problems.is_empty() {
            bad.insert(
                file.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                problems,
            );
        }
    }
    assert!(
        bad.is_empty(),
        "diagrams name what does not exist: {bad:#?}"
    );
}

#[test]
fn the_name_check_catches_made_up_names() {
    let code = Code::read();
    let made_up = "GET /api/v1/auth/nope\\nGET /nope, (/livez) [cache] nope_ttl [[idp]] nope\n\
                   src/auth/nope.rs holdfast_nope_total X-Auth-Nope hf:nope:{x}\n\
                   Sessions::nope Rotation::Nope\n";
    let problems = code.problems(made_up);
    assert_eq!(problems.len(), 10, "{problems:#?}");
    let fine = "POST /api/v1/admin/users/{id}/roles GET /readyz /api/v1/… [breaker.redis] open_wait \
                [[idp]] jwks_ttl src/store/redis_link/events.rs holdfast_mode hf:session:{<sid>} \
                X-Auth-User-Id Sessions::refresh Rotation::AlreadyRotated";
    assert_eq!(code.problems(fine), Vec::<String>::new());
}

/// `text` split at the commas outside parentheses.
fn top_level_items(text: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// Each table of `migrations/postgres/*.sql` with the columns the last
/// migration leaves it (CREATE TABLE, ALTER TABLE … ADD / DROP COLUMN).
fn migrated_tables() -> BTreeMap<String, BTreeSet<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("migrations/postgres"))
        .expect("migrations")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let sql: String = std::fs::read_to_string(&file)
            .expect("sql")
            .lines()
            .map(|l| l.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        for statement in sql.split(';').map(str::trim) {
            if let Some(rest) = statement.strip_prefix("CREATE TABLE ") {
                let (name, body) = rest.split_once('(').expect("CREATE TABLE name (");
                let body = &body[..body.rfind(')').expect("closing parenthesis")];
                let columns = top_level_items(body)
                    .into_iter()
                    .filter_map(|item| item.split_whitespace().next())
                    .filter(|word| {
                        !["PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK"].contains(word)
                    })
                    .map(str::to_string)
                    .collect();
                tables.insert(name.trim().to_string(), columns);
            } else if let Some(rest) = statement.strip_prefix("ALTER TABLE ") {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let columns = tables
                    .get_mut(words[0])
                    .expect("ALTER TABLE of a known table");
                match words[1..4] {
                    ["ADD", "COLUMN", column] => columns.insert(column.to_string()),
                    ["DROP", "COLUMN", column] => columns.remove(column),
                    _ => panic!("an ALTER TABLE this check does not read: {statement}"),
                };
            }
        }
    }
    tables
}

/// The `entity NAME { column : type … }` blocks of `schema.puml`.
fn diagram_tables() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(repo("docs/diagrams/schema.puml")).expect("schema.puml");
    let mut tables = BTreeMap::new();
    let mut current: Option<(String, BTreeSet<String>)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("entity ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            current = Some((name.to_string(), BTreeSet::new()));
        } else if line == "}" {
            let (name, columns) = current.take().expect("} closes an entity");
            tables.insert(name, columns);
        } else if let Some((_, columns)) = current.as_mut()
            && let Some((column, _)) = line.split_once(" :")
        {
            columns.insert(column.trim_start_matches("* ").to_string());
        }
    }
    tables
}

#[test]
fn schema_diagram_has_every_table_and_column_of_the_migrations() {
    let migrated = migrated_tables();
    assert!(
        migrated
            .get("sessions")
            .is_some_and(|c| c.contains("generation"))
            && migrated
                .get("signing_keys")
                .is_some_and(|c| !c.contains("state")),
        "the migrations are read to their end: {migrated:?}"
    );
    assert_eq!(
        diagram_tables(),
        migrated,
        "docs/diagrams/schema.puml must show every table and column of migrations/postgres"
    );
}

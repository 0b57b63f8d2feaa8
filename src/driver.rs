//! Strings the stages together: load a file and its imports, parse them, collect the
//! definitions, expand the selected networks. The CLI and the tests both go through here.

use crate::diag::{Code, Diagnostic};
use crate::expand::{self, Definitions};
use crate::graph::Graph;
use crate::source::{FileId, SourceMap, Span};
use crate::stdlib;
use crate::syntax::{self, ast};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a loaded file came from: a file on disk or the embedded standard library.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FileOrigin {
    Disk(PathBuf),
    Std(String),
}

pub struct ParsedFile {
    pub id: FileId,
    pub origin: FileOrigin,
    pub ast: ast::File,
    /// The prefixes its names take in the root's namespace: `""` for the root and files
    /// imported without `as`, `resnet.` for `import "resnet.cnn" as resnet`; the first is
    /// the one its own text is read in.
    pub namespaces: Vec<String>,
    /// The import that first loaded it (none for the root).
    pub imported_by: Option<ast::Import>,
}

/// A root file and every file it imports, parsed.
pub struct Program {
    pub sources: SourceMap,
    /// The root file first, then imports in the order they were first reached.
    pub files: Vec<ParsedFile>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Which networks of the root file to expand.
#[derive(Clone, Debug)]
pub enum Select {
    All,
    First,
    Named(String),
}

/// One network's expansion: its graph if it had no errors, and its own diagnostics.
pub struct NetworkResult {
    pub name: String,
    pub graph: Option<Graph>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The result of compiling a program up to the typed graph.
pub struct Compilation {
    pub program: Program,
    /// Diagnostics about the files as a whole: syntax, imports, definitions, selection.
    pub diagnostics: Vec<Diagnostic>,
    pub networks: Vec<NetworkResult>,
}

impl Compilation {
    /// Every diagnostic, file-level first, then each network's.
    pub fn all_diagnostics(&self) -> Vec<Diagnostic> {
        let mut all = self.diagnostics.clone();
        for network in &self.networks {
            all.extend(network.diagnostics.iter().cloned());
        }
        all
    }

    pub fn has_errors(&self) -> bool {
        self.all_diagnostics().iter().any(Diagnostic::is_error)
    }

    pub fn graphs(&self) -> impl Iterator<Item = &Graph> {
        self.networks.iter().filter_map(|n| n.graph.as_ref())
    }

    pub fn render_diagnostics(&self) -> String {
        crate::diag::render_plain(&self.program.sources, &self.all_diagnostics())
    }
}

/// Reads and parses `path` and its imports. An unreadable root file is an I/O error; every
/// other problem is a diagnostic in the returned program.
pub fn load(path: &Path) -> std::io::Result<Program> {
    let display = path.display().to_string();
    if let Some(text) = display
        .strip_prefix("std/")
        .and_then(|_| stdlib::get(&display))
    {
        if !path.exists() {
            return Ok(load_source_with_origin(
                &display,
                text,
                FileOrigin::Std(display.clone()),
            ));
        }
    }
    let bytes = crate::source::read_regular_file(path, crate::source::MAX_SOURCE_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|error| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            describe_invalid_utf8(error.as_bytes(), error.utf8_error().valid_up_to()),
        )
    })?;
    Ok(load_source_with_origin(&display, &text, disk_origin(path)))
}

/// The name standard input goes by in diagnostics (`cnnc check -`).
pub const STDIN_NAME: &str = "<stdin>";

/// Reads a program from `reader` (standard input), named `<stdin>`; imports are relative to
/// the current directory. Too long or not UTF-8 is an I/O error, as for a file.
pub fn load_reader(reader: impl std::io::Read) -> std::io::Result<Program> {
    use std::io::{Error, ErrorKind, Read};
    let limit = crate::source::MAX_SOURCE_BYTES;
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("the program is longer than the limit of {limit} bytes"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|error| {
        Error::new(
            ErrorKind::InvalidData,
            describe_invalid_utf8(error.as_bytes(), error.utf8_error().valid_up_to()),
        )
    })?;
    Ok(load_source(STDIN_NAME, &text))
}

/// Where a file stops being UTF-8, as a user can find it in an editor: the line and column of
/// the first bad byte (columns count characters), its value and its byte offset.
fn describe_invalid_utf8(bytes: &[u8], valid_up_to: usize) -> String {
    // Everything before `valid_up_to` is valid UTF-8 by definition.
    let before = std::str::from_utf8(&bytes[..valid_up_to]).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let byte = bytes.get(valid_up_to).copied().unwrap_or_default();
    format!(
        "the file is not valid UTF-8 text: the byte 0x{byte:02X} at line {line}, column {column} \
         (byte offset {valid_up_to}) does not start a UTF-8 character"
    )
}

/// Parses source text as if it were a file named `name` in the current directory.
pub fn load_source(name: &str, text: &str) -> Program {
    load_source_with_origin(name, text, disk_origin(Path::new(name)))
}

/// Files are identified by their canonical path, so that a cycle through `../` is noticed.
fn disk_origin(path: &Path) -> FileOrigin {
    FileOrigin::Disk(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()))
}

/// `a/b/../c.cnn` → `a/c.cnn`, for messages; the file system is not consulted.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn load_source_with_origin(name: &str, text: &str, origin: FileOrigin) -> Program {
    let mut loader = Loader {
        program: Program {
            sources: SourceMap::new(),
            files: Vec::new(),
            diagnostics: Vec::new(),
        },
        loaded: HashMap::new(),
        stack: Vec::new(),
    };
    loader.add_file(name, text, origin, String::new(), None);
    loader.program
}

struct Loader {
    program: Program,
    loaded: HashMap<FileOrigin, FileId>,
    /// The chain of files being loaded, for cycle detection.
    stack: Vec<(FileOrigin, String)>,
}

impl Loader {
    fn add_file(
        &mut self,
        name: &str,
        text: &str,
        origin: FileOrigin,
        namespace: String,
        imported_by: Option<ast::Import>,
    ) {
        let id = self.program.sources.add(name, text);
        self.loaded.insert(origin.clone(), id);
        let ast = match syntax::parse(id, text) {
            Ok(ast) => ast,
            Err(diagnostics) => {
                self.program.diagnostics.extend(diagnostics);
                ast::File::default()
            }
        };
        let imports: Vec<ast::Import> = ast
            .items
            .iter()
            .filter_map(|item| match item {
                ast::Item::Import(import) => Some(import.clone()),
                _ => None,
            })
            .collect();
        self.program.files.push(ParsedFile {
            id,
            origin: origin.clone(),
            ast,
            namespaces: vec![namespace.clone()],
            imported_by,
        });
        self.stack.push((origin.clone(), name.to_string()));
        for import in imports {
            let namespace = match &import.alias {
                Some(alias) => format!("{namespace}{}.", alias.name),
                None => namespace.clone(),
            };
            self.import(&origin, name, &import, namespace);
        }
        self.stack.pop();
    }

    fn import(
        &mut self,
        from: &FileOrigin,
        from_name: &str,
        import: &ast::Import,
        namespace: String,
    ) {
        let Some((target, name, text)) = self.resolve(from, from_name, import) else {
            return;
        };
        if let Some(pos) = self.stack.iter().position(|(o, _)| *o == target) {
            let mut chain: Vec<String> = self.stack[pos..].iter().map(|(_, n)| n.clone()).collect();
            chain.push(name.clone());
            self.program.diagnostics.push(
                Diagnostic::error(
                    Code::CircularImport,
                    import.span,
                    format!("circular import: {}", chain.join(" → ")),
                )
                .with_label("this import leads back to a file being imported")
                .with_help("move the shared blocks into a third file that both import"),
            );
            return;
        }
        if let Some(&id) = self.loaded.get(&target) {
            // Imported again, perhaps under another name: its names are known by both.
            if let Some(file) = self.program.files.iter_mut().find(|f| f.id == id) {
                if !file.namespaces.contains(&namespace) {
                    file.namespaces.push(namespace);
                }
            }
            return;
        }
        self.add_file(&name, &text, target, namespace, Some(import.clone()));
    }

    fn resolve(
        &mut self,
        from: &FileOrigin,
        from_name: &str,
        import: &ast::Import,
    ) -> Option<(FileOrigin, String, String)> {
        let path = import.path.as_str();
        let std_name = if path.starts_with("std/") {
            Some(path.to_string())
        } else if matches!(from, FileOrigin::Std(_)) {
            Some(format!("std/{path}"))
        } else {
            None
        };
        if let Some(std_name) = std_name {
            if let Some(text) = stdlib::get(&std_name) {
                return Some((
                    FileOrigin::Std(std_name.clone()),
                    std_name,
                    text.to_string(),
                ));
            }
            let available: Vec<&str> = stdlib::FILES.iter().map(|(n, _)| *n).collect();
            self.program.diagnostics.push(
                Diagnostic::error(
                    Code::MissingImport,
                    import.span,
                    format!("the standard library has no file `{std_name}`"),
                )
                .with_label("imported here")
                .with_help(
                    match crate::expand::closest_name(&std_name, available.iter().copied()) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => format!("the standard library has {}", available.join(", ")),
                    },
                ),
            );
            return None;
        }
        // Relative to the importing file as the user named it, so messages show short paths.
        let base = Path::new(from_name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let candidate = normalize(&base.join(path));
        match crate::source::read_regular_file(&candidate, crate::source::MAX_SOURCE_BYTES)
            .map(String::from_utf8)
        {
            Ok(Ok(text)) => Some((
                disk_origin(&candidate),
                candidate.display().to_string(),
                text,
            )),
            Ok(Err(error)) => {
                let why = describe_invalid_utf8(error.as_bytes(), error.utf8_error().valid_up_to());
                self.program.diagnostics.push(
                    Diagnostic::error(
                        Code::MissingImport,
                        import.span,
                        format!("cannot read `{}`: {why}", candidate.display()),
                    )
                    .with_label("imported here"),
                );
                None
            }
            Err(error) => {
                self.program.diagnostics.push(
                    Diagnostic::error(Code::MissingImport, import.span, format!("cannot read `{}`: {error}", candidate.display()))
                        .with_label("imported here")
                        .with_help("import paths are relative to the importing file; `std/...` names the standard library"),
                );
                None
            }
        }
    }
}

/// Every block and network of the program by name; a name defined twice is an error, and a
/// name an import brings that the program already has is an `import-collision`.
pub fn definitions(program: &Program) -> (Definitions<'_>, Vec<Diagnostic>) {
    let mut defs = Definitions::default();
    let mut diagnostics = Vec::new();
    let mut spans: HashMap<String, Span> = HashMap::new();
    for file in &program.files {
        if let Some(namespace) = file.namespaces.first() {
            defs.namespaces.insert(file.id, namespace.clone());
        }
        for item in &file.ast.items {
            let name = match item {
                ast::Item::Block(block) => &block.name,
                ast::Item::Network(network) => &network.name,
                ast::Item::Import(_) => continue,
            };
            if crate::expand::is_builtin_name(&name.name) {
                // A definition would silently replace the built-in everywhere, even in a file
                // that only imports this one.
                let kind = match item {
                    ast::Item::Block(_) => "block",
                    _ => "network",
                };
                diagnostics.push(
                    Diagnostic::error(
                        Code::BuiltinName,
                        name.span,
                        format!(
                            "a {kind} cannot be named `{}`: that is a built-in layer or function",
                            name.name
                        ),
                    )
                    .with_label("the name of a built-in")
                    .with_help(format!("rename the {kind}, e.g. `my_{}`", name.name)),
                );
                continue;
            }
            for namespace in &file.namespaces {
                let key = format!("{namespace}{}", name.name);
                if let Some(&first) = spans.get(&key) {
                    diagnostics.push(collision(program, file, &key, first, name.span));
                    continue;
                }
                spans.insert(key.clone(), name.span);
                match item {
                    ast::Item::Block(block) => {
                        defs.blocks.insert(key, block);
                    }
                    ast::Item::Network(network) => {
                        defs.networks.insert(key, network);
                    }
                    ast::Item::Import(_) => {}
                }
            }
        }
    }
    (defs, diagnostics)
}

/// A second definition of `key`: in the same file, `duplicate-definition`; brought by an
/// import, `import-collision`, pointing at the import and suggesting `as`.
fn collision(
    program: &Program,
    file: &ParsedFile,
    key: &str,
    first: Span,
    second: Span,
) -> Diagnostic {
    let import = file
        .imported_by
        .as_ref()
        .filter(|_| first.file != second.file);
    let Some(import) = import else {
        return Diagnostic::error(
            Code::DuplicateDefinition,
            second,
            format!("`{key}` is defined twice"),
        )
        .with_label("second definition")
        .with_secondary(first, "first definition")
        .with_help("rename one of them");
    };
    let imported = program.sources.name(file.id);
    let stem = Path::new(&import.path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("imported");
    let mut alias: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !alias.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        alias.insert(0, '_');
    }
    Diagnostic::error(
        Code::ImportCollision,
        import.span,
        format!("this import brings a second `{key}`"),
    )
    .with_label(format!("`{imported}` defines `{key}`"))
    .with_secondary(first, format!("`{key}` is already defined here"))
    .with_secondary(second, "the imported definition")
    .with_help(format!(
        "give the import a namespace of its own: `import \"{}\" as {alias}`, then call `{alias}.{key}(…)`; or rename the first definition",
        import.path
    ))
}

/// The root file's networks, in source order.
pub fn root_networks(program: &Program) -> Vec<&ast::NetworkDef> {
    program
        .files
        .first()
        .map(|file| {
            file.ast
                .items
                .iter()
                .filter_map(|item| match item {
                    ast::Item::Network(network) => Some(network),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Parses, expands and infers the selected networks. Stops after the first stage with errors:
/// a file that does not parse is not expanded.
pub fn compile(program: Program, select: &Select) -> Compilation {
    let mut diagnostics = program.diagnostics.clone();
    let mut results = Vec::new();
    if !diagnostics.iter().any(Diagnostic::is_error) {
        let (defs, def_diagnostics) = definitions(&program);
        diagnostics.extend(def_diagnostics);
        if !diagnostics.iter().any(Diagnostic::is_error) {
            let networks: Vec<&ast::NetworkDef> = match select {
                Select::All => root_networks(&program),
                Select::First => root_networks(&program).into_iter().take(1).collect(),
                Select::Named(name) => match defs.networks.get(name.as_str()) {
                    Some(network) => vec![*network],
                    None => {
                        diagnostics.push(unknown_network(&program, &defs, name));
                        Vec::new()
                    }
                },
            };
            if networks.is_empty() && !diagnostics.iter().any(Diagnostic::is_error) {
                let name = program.sources.name(FileId(0)).to_string();
                diagnostics.push(
                    Diagnostic::global(Code::NoNetwork, format!("`{name}` defines no network"))
                        .with_help(
                        "a file needs `network NAME(input: HxWxC) { ... }` to be checked or run",
                    ),
                );
            }
            for network in networks {
                let (graph, found) = expand::expand_network(&defs, network);
                results.push(NetworkResult {
                    name: network.name.name.clone(),
                    graph,
                    diagnostics: found,
                });
            }
        }
    }
    // Unused blocks and parameters are reported once the program is otherwise correct: beside
    // an error, an unused block is most often the one a misspelled call meant.
    let has_errors = diagnostics.iter().any(Diagnostic::is_error)
        || results
            .iter()
            .any(|r| r.diagnostics.iter().any(Diagnostic::is_error));
    if let (false, Some(root)) = (has_errors, program.files.first()) {
        let files: Vec<&ast::File> = program.files.iter().map(|f| &f.ast).collect();
        diagnostics.extend(expand::unused_warnings(&root.ast, &files));
    }
    let mut program = program;
    program.diagnostics.clear();
    Compilation {
        program,
        diagnostics,
        networks: results,
    }
}

fn unknown_network(program: &Program, defs: &Definitions<'_>, name: &str) -> Diagnostic {
    let mut names: Vec<&str> = defs.networks.keys().map(String::as_str).collect();
    names.sort();
    let file = program.sources.name(FileId(0));
    let mut diagnostic = Diagnostic::global(
        Code::UnknownNetwork,
        format!("`{file}` has no network named `{name}`"),
    );
    if let Some(s) = crate::expand::closest_name(name, names.iter().copied()) {
        diagnostic = diagnostic.with_help(format!("did you mean `{s}`?"));
    } else if !names.is_empty() {
        diagnostic = diagnostic.with_note(format!("its networks are {}", names.join(", ")));
    }
    diagnostic
}

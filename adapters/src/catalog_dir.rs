//! Reads the catalog directory (every `*.toml` file in it, not recursing) for core to validate.

use std::path::Path;

use microbatch_core::catalog::{Catalog, Source};

/// The catalog in `dir`; errors name the directory or each file's problem.
pub fn load(dir: &Path) -> anyhow::Result<Catalog> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read the catalog directory {}: {e}", dir.display()))?;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read catalog file {}: {e}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            sources.push(Source { name, text });
        }
    }
    if sources.is_empty() {
        anyhow::bail!("the catalog directory {} has no .toml files", dir.display());
    }
    Ok(Catalog::load(sources)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_example_catalog() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
        let c = load(&dir).unwrap();
        assert!(c.event_types().count() >= 10);
    }

    #[test]
    fn errors_name_the_directory_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("has no .toml files"), "{err}");
        std::fs::write(tmp.path().join("bad.toml"), "[[events]]\ntype = 1\n").unwrap();
        let err = load(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("bad.toml: invalid TOML"), "{err}");
        let err = load(&tmp.path().join("nope")).unwrap_err().to_string();
        assert!(err.starts_with("cannot read the catalog directory"), "{err}");
    }
}

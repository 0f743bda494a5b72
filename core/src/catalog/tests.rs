use super::*;

fn src(name: &str, text: &str) -> Source {
    Source {
        name: name.into(),
        text: text.into(),
    }
}

fn load(text: &str) -> Result<Catalog, CatalogErrors> {
    Catalog::load([src("c.toml", text)])
}

fn errors(text: &str) -> Vec<String> {
    load(text)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const GOOD: &str = r#"
[[events]]
type = "order_placed"
schema = { type = "object", required = ["order_id"] }
[[events.outputs]]
table = "orders"
columns = [
  { name = "order_id", type = "text", pointer = "/order_id", nullable = false },
  { name = "total", type = "double", pointer = "/total" },
]
[[events.outputs]]
table = "order_items"
explode = "/items"
columns = [ { name = "sku", type = "text", item = "/sku" } ]
"#;

#[test]
fn loads_a_valid_catalog() {
    let c = load(GOOD).unwrap();
    let orders = c.table(c.table_id("orders").unwrap());
    let names: Vec<&str> = orders.column_names().collect();
    assert_eq!(
        names,
        [
            "_event_id",
            "_row_index",
            "_received_at",
            "_shard",
            "_sequence",
            "_sub_sequence",
            "order_id",
            "total"
        ]
    );
    assert_eq!(orders.mode, Mode::Append);
    let ev = c.event_type("order_placed").unwrap();
    assert!(ev.schema.is_some());
    assert_eq!(ev.outputs.len(), 2);
    assert_eq!(c.version().len(), 16);
}

#[test]
fn the_example_catalog_loads() {
    let dir = [
        ("shop.toml", include_str!("../../../examples/catalog/shop.toml")),
        ("web.toml", include_str!("../../../examples/catalog/web.toml")),
        (
            "payments.toml",
            include_str!("../../../examples/catalog/payments.toml"),
        ),
        (
            "codehost.toml",
            include_str!("../../../examples/catalog/codehost.toml"),
        ),
    ];
    let c = Catalog::load(dir.map(|(n, t)| src(n, t))).unwrap();
    assert!(c.event_types().count() >= 10);
    assert!(matches!(
        c.table(c.table_id("customers").unwrap()).mode,
        Mode::Upsert { .. }
    ));
}

#[test]
fn version_changes_with_any_source_text() {
    let a = load(GOOD).unwrap();
    let b = load(&GOOD.replace("\"/total\"", "\"/amount\"")).unwrap();
    assert_ne!(a.version(), b.version());
    assert_eq!(a.version(), load(GOOD).unwrap().version());
}

fn one_output(columns: &str, extra: &str) -> String {
    format!("[[events]]\ntype = \"e\"\n[[events.outputs]]\ntable = \"t\"\n{extra}\ncolumns = [ {columns} ]\n")
}

#[test]
fn each_error_names_file_event_table_and_column() {
    let cases: &[(String, &str)] = &[
        (
            one_output(r#"{ name = "a", type = "money", pointer = "/a" }"#, ""),
            r#"c.toml: event type "e", table "t", column "a": unknown column type "money" (expected one of text, bigint, double, boolean, timestamp, date, json)"#,
        ),
        (
            one_output(r#"{ name = "a", type = "text", pointer = "a" }"#, ""),
            r#"c.toml: event type "e", table "t", column "a": JSON pointer "a" must be empty or start with '/'"#,
        ),
        (
            one_output(r#"{ name = "A", type = "text", pointer = "/a" }"#, ""),
            r#"c.toml: event type "e", table "t", column "A": "A" is not a valid identifier: it must match ^[a-z_][a-z0-9_]{0,126}$"#,
        ),
        (
            one_output(r#"{ name = "select", type = "text", pointer = "/a" }"#, ""),
            r#"c.toml: event type "e", table "t", column "select": "select" is a reserved word in PostgreSQL or Redshift"#,
        ),
        (
            one_output(r#"{ name = "_event_id", type = "text", pointer = "/a" }"#, ""),
            r#"c.toml: event type "e", table "t", column "_event_id": column name collides with the lineage column of the same name"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a" }, { name = "a", type = "text", pointer = "/b" }"#,
                "",
            ),
            r#"c.toml: event type "e", table "t", column "a": column is declared twice in the same output"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a", envelope = "id" }"#,
                "",
            ),
            r#"c.toml: event type "e", table "t", column "a": column needs exactly one of `pointer`, `item` or `envelope`"#,
        ),
        (
            one_output(r#"{ name = "a", type = "text", item = "/a" }"#, ""),
            r#"c.toml: event type "e", table "t", column "a": `item` is only allowed in an output with `explode`"#,
        ),
        (
            one_output(r#"{ name = "a", type = "text", envelope = "ip" }"#, ""),
            r#"c.toml: event type "e", table "t", column "a": unknown envelope field "ip" (expected one of id, type, source, received_at, occurred_at)"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a", epoch = "seconds" }"#,
                "",
            ),
            r#"c.toml: event type "e", table "t", column "a": `epoch` is only allowed on timestamp columns"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "timestamp", pointer = "/a", epoch = "days" }"#,
                "",
            ),
            r#"c.toml: event type "e", table "t", column "a": unknown epoch "days" (expected seconds or millis)"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a" }"#,
                "mode = \"upsert\"",
            ),
            r#"c.toml: event type "e", table "t": upsert output needs a non-empty `key`"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a" }"#,
                "mode = \"upsert\"\nkey = [\"b\"]",
            ),
            r#"c.toml: event type "e", table "t", column "b": key column "b" is not a column of the output"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a" }"#,
                "mode = \"upsert\"\nkey = [\"a\"]",
            ),
            r#"c.toml: event type "e", table "t", column "a": key column "a" must not be nullable"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a" }"#,
                "key = [\"a\"]",
            ),
            r#"c.toml: event type "e", table "t": `key` is only allowed with mode = "upsert""#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a" }"#,
                "mode = \"merge\"",
            ),
            r#"c.toml: event type "e", table "t": unknown mode "merge" (expected append or upsert)"#,
        ),
        (
            one_output(
                r#"{ name = "a", type = "text", pointer = "/a" }"#,
                "explode = \"items\"",
            ),
            r#"c.toml: event type "e", table "t": JSON pointer "items" must be empty or start with '/'"#,
        ),
        (
            "[[events]]\ntype = \"e\"\n".to_owned(),
            r#"c.toml: event type "e": event type has no outputs"#,
        ),
        (
            "[[events]]\ntype = \"e e\"\n".to_owned(),
            r#"c.toml: event type "e e": invalid event type name "e e": use letters, digits, '.', '_' or '-' (1 to 128)"#,
        ),
        (
            one_output(r#"{ name = "a", type = "text", pointer = "/a" }"#, "")
                .replace("type = \"e\"\n", "type = \"e\"\nschema = { type = 7 }\n"),
            r#"c.toml: event type "e": invalid JSON Schema: 7 is not valid under any of the schemas listed in the 'anyOf' keyword"#,
        ),
        (
            "[[events]]\ntype = \"e\"\ncolour = 1\n".to_owned(),
            "c.toml: invalid TOML: unknown field `colour`, expected one of `type`, `description`, `schema`, `outputs`",
        ),
        (
            "events = [".to_owned(),
            "c.toml: invalid TOML: unclosed array, expected `]`",
        ),
    ];
    for (text, expected) in cases {
        let got = errors(text);
        assert_eq!(got, vec![expected.to_string()], "catalog:\n{text}");
    }
}

#[test]
fn conflicting_table_declarations_name_both_event_types() {
    let a = one_output(r#"{ name = "a", type = "text", pointer = "/a" }"#, "");
    let b = a
        .replace("\"e\"", "\"f\"")
        .replace("type = \"text\"", "type = \"bigint\"");
    let err = Catalog::load([src("a.toml", &a), src("b.toml", &b)]).unwrap_err();
    assert_eq!(
        err.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            r#"b.toml: event type "f", table "t": table is declared differently by event type "e" in a.toml: column "a" is text there but bigint here"#
        ]
    );
    let missing = a.replace("\"e\"", "\"g\"").replace(
        r#"{ name = "a", type = "text", pointer = "/a" }"#,
        r#"{ name = "a", type = "text", pointer = "/a" }, { name = "b", type = "text", pointer = "/b" }"#,
    );
    let err = Catalog::load([src("a.toml", &a), src("c.toml", &missing)]).unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"column "b" is not in the first declaration"#),
        "{err}"
    );
}

#[test]
fn same_table_in_another_column_order_is_fine_and_uses_the_first_order() {
    let a = one_output(
        r#"{ name = "a", type = "text", pointer = "/a" }, { name = "b", type = "bigint", pointer = "/b" }"#,
        "",
    );
    let b = one_output(
        r#"{ name = "b", type = "bigint", pointer = "/y" }, { name = "a", type = "text", pointer = "/x" }"#,
        "",
    )
    .replace("\"e\"", "\"f\"");
    let c = Catalog::load([src("b.toml", &b), src("a.toml", &a)]).unwrap();
    let f = c.event_type("f").unwrap();
    let order: Vec<&str> = f.outputs[0]
        .columns
        .iter()
        .map(|c| c.column.name.as_str())
        .collect();
    assert_eq!(
        order,
        ["a", "b"],
        "columns follow the table, declared first in a.toml"
    );
}

#[test]
fn duplicate_event_types_and_empty_catalogs_are_errors() {
    let a = one_output(r#"{ name = "a", type = "text", pointer = "/a" }"#, "");
    let err = Catalog::load([src("a.toml", &a), src("b.toml", &a)]).unwrap_err();
    assert_eq!(
        err.0[0].to_string(),
        r#"b.toml: event type "e": event type is declared twice (also in a.toml)"#
    );
    let err = Catalog::load([]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the catalog has 1 error(s):\n  (catalog): the catalog declares no event types"
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = one_output(
        r#"{ name = "A", type = "text", pointer = "/a" }, { name = "b", type = "nope", pointer = "/b" }"#,
        "",
    );
    assert_eq!(errors(&text).len(), 2);
}

#!/usr/bin/env node
// Formatting check for machines without a terraform binary: HashiCorp's
// hclwrite formatter (the one `terraform fmt` is built on), compiled to
// WebAssembly in the npm package @cdktf/hcl-tools.
//
// Usage: node hclfmt.js FILE...   (NODE_PATH must reach @cdktf/hcl-tools)
// Exit 1 and name each file whose text differs from its formatted text.
"use strict";

const fs = require("fs");
const { format } = require("@cdktf/hcl-tools");

async function main(files) {
  if (files.length === 0) {
    console.error("hclfmt: no files given");
    return 2;
  }
  let bad = 0;
  for (const file of files) {
    const text = fs.readFileSync(file, "utf8");
    let formatted;
    try {
      formatted = await format(text);
    } catch (err) {
      console.log(`${file}: cannot format: ${err && err.message ? err.message : err}`);
      bad += 1;
      continue;
    }
    if (formatted !== text) {
      bad += 1;
      const a = text.split("\n");
      const b = formatted.split("\n");
      let line = 0;
      while (line < a.length && line < b.length && a[line] === b[line]) line += 1;
      console.log(`${file}:${line + 1}: not formatted`);
      console.log(`  -${a[line] === undefined ? "" : a[line]}`);
      console.log(`  +${b[line] === undefined ? "" : b[line]}`);
    }
  }
  console.log(`hclfmt: ${files.length} file(s), ${bad} not formatted`);
  return bad ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);

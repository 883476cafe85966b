// The report CSV (docs/reports.md, "CSV"): a header row, one row per bucket, a last `total`
// row; a null is an empty cell. Its cells are numbers and ISO times, never quoted, so a quote
// or a row of another width means this is not that format.

/** The `total` row of a report CSV as {column: text or null}; throws on anything else. */
export function totalRow(text) {
  const lines = text.split("\r\n");
  if (lines.at(-1) === "") lines.pop();
  if (text.includes('"') || lines.length < 2) throw new Error("not a report CSV");
  const [header, ...rows] = lines.map((line) => line.split(","));
  if (header[0] !== "row" || rows.some((row) => row.length !== header.length)) {
    throw new Error("not a report CSV");
  }
  const total = rows.at(-1);
  if (total[0] !== "total") throw new Error("the report CSV has no total row");
  return Object.fromEntries(header.map((name, i) => [name, total[i] === "" ? null : total[i]]));
}

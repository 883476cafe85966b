// RFC 8785 JSON Canonicalization Scheme, and the strict JSON parser whose values it encodes.

const SAFE = Number.MAX_SAFE_INTEGER;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export class FormatError extends Error {}

function string(text) {
  // RFC 8785 3.2.2.2: JSON.stringify escapes exactly as JCS does, but lone surrogates
  // cannot be encoded as UTF-8 at all.
  if (LONE_SURROGATE.test(text)) throw new FormatError("a string holds a lone surrogate");
  return JSON.stringify(text);
}

/** The JCS text of a value (encode it as UTF-8 for the bytes that are signed or hashed). */
export function canonicalize(value) {
  if (value === null || typeof value === "boolean") return String(value);
  if (typeof value === "number") {
    // RFC 8785 3.2.2.3: ECMAScript's Number serialization, which JSON.stringify uses.
    if (!Number.isFinite(value)) throw new FormatError("NaN and Infinity are not JSON");
    return JSON.stringify(value);
  }
  if (typeof value === "string") return string(value);
  if (Array.isArray(value)) return `[${value.map(canonicalize).join(",")}]`;
  // RFC 8785 3.2.3: members sorted by the UTF-16 code units of their names.
  const names = Object.keys(value).sort();
  return `{${names.map((name) => `${string(name)}:${canonicalize(value[name])}`).join(",")}}`;
}

const TOKEN = /\s*(?:([{}[\],:])|("(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")|(-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?)|(true|false|null))/y;

/** Parse JSON strictly: no duplicate names, no integer a double cannot hold exactly. */
export function parseStrict(text) {
  let at = 0;
  const next = () => {
    TOKEN.lastIndex = at;
    const match = TOKEN.exec(text);
    if (!match) throw new FormatError(`not valid JSON at character ${at}`);
    at = TOKEN.lastIndex;
    return match;
  };
  const value = (match) => {
    const [, punct, str, num, word] = match;
    if (str !== undefined) return JSON.parse(str);
    if (num !== undefined) {
      const n = Number(num);
      if (!Number.isFinite(n)) throw new FormatError(`number out of range: ${num}`);
      if (/^-?\d+$/.test(num) && Math.abs(n) > SAFE) {
        throw new FormatError(`integer beyond 2^53 cannot be checked exactly: ${num}`);
      }
      return n;
    }
    if (word !== undefined) return JSON.parse(word);
    if (punct === "[") {
      const list = [];
      let token = next();
      if (token[1] === "]") return list;
      for (;;) {
        list.push(value(token));
        token = next();
        if (token[1] === "]") return list;
        if (token[1] !== ",") throw new FormatError(`expected , or ] at character ${at}`);
        token = next();
      }
    }
    if (punct === "{") {
      const object = {};
      let token = next();
      if (token[1] === "}") return object;
      for (;;) {
        if (token[2] === undefined) throw new FormatError(`expected a name at character ${at}`);
        const name = JSON.parse(token[2]);
        if (Object.hasOwn(object, name)) throw new FormatError(`duplicate name ${JSON.stringify(name)}`);
        if (next()[1] !== ":") throw new FormatError(`expected : at character ${at}`);
        Object.defineProperty(object, name, { value: value(next()), enumerable: true, writable: true, configurable: true });
        token = next();
        if (token[1] === "}") return object;
        if (token[1] !== ",") throw new FormatError(`expected , or } at character ${at}`);
        token = next();
      }
    }
    throw new FormatError(`unexpected ${punct} at character ${at}`);
  };
  const result = value(next());
  if (text.slice(at).trim() !== "") throw new FormatError(`text after the JSON value at character ${at}`);
  return result;
}

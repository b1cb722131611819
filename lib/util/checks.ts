/** Checks of user-given values (flags, config fields) with messages that name the flag and the value. */

/** An integer in [min, max]. */
export function requireInteger(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new Error(`${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in ${min}–${max}`}, got '${String(v)}'.`);
  }
  return v;
}

/** Parse an integer flag given as text: '1.5', 'abc', '' and out-of-range values are errors. */
export function parseInteger(name: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^[+-]?\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`}, got '${text}'.`);
  }
  return n;
}

/** A name from a fixed list. */
export function requireOneOf<T extends string>(name: string, v: string, names: readonly T[]): T {
  if (!(names as readonly string[]).includes(v)) throw new Error(`${name} '${v}' is not known: use one of ${names.join(", ")}.`);
  return v as T;
}

/** A path or name that must not be empty or blank ('' would silently mean "the default" or the current folder). */
export function requireNonEmpty(name: string, v: string, hint = ""): string {
  if (v.trim() === "") throw new Error(`${name} is empty ('${v}'): give ${hint || "a value"}. Nothing was read or written.`);
  return v;
}

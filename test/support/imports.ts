/**
 * The relative import graph of a TypeScript tree: every `import … from`, `export … from`,
 * `import type`, `import("…")` and `require("…")` with a relative path, resolved to a file.
 * Nodes for the layering check are the folders directly under the root; a file at the root is a
 * node of its own (config.ts, evaluation.ts, …).
 */
import * as fs from "fs";
import * as path from "path";

const IMPORT_RE = /(?:import|export)\s[^;]*?from\s+["'](\.[^"']+)["']|import\(\s*["'](\.[^"']+)["']\s*\)|require\(\s*["'](\.[^"']+)["']\s*\)/g;

export function tsFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const f of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, f.name);
      if (f.isDirectory()) walk(p);
      else if (f.name.endsWith(".ts") && !f.name.endsWith(".d.ts")) out.push(p);
    }
  };
  walk(root);
  return out.sort();
}

function resolveImport(from: string, spec: string): string | null {
  const p = path.resolve(path.dirname(from), spec);
  for (const c of [`${p}.ts`, path.join(p, "index.ts"), p]) if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  return null;
}

/** file → the files it imports (relative imports only), paths relative to root. */
export function importGraph(root: string): Map<string, Set<string>> {
  const g = new Map<string, Set<string>>();
  for (const f of tsFiles(root)) {
    const src = fs.readFileSync(f, "utf8");
    const deps = new Set<string>();
    for (const m of src.matchAll(IMPORT_RE)) {
      const t = resolveImport(f, m[1] ?? m[2] ?? m[3]);
      if (t && t.startsWith(root + path.sep)) deps.add(path.relative(root, t));
    }
    g.set(path.relative(root, f), deps);
  }
  return g;
}

/** The folder (first path segment) of a file, or the file itself at the root. */
export function nodeOf(rel: string): string {
  return rel.split(path.sep)[0];
}

/** Folder-level edges, each with the file imports that make it. */
export function folderGraph(files: Map<string, Set<string>>): Map<string, Map<string, string[]>> {
  const g = new Map<string, Map<string, string[]>>();
  for (const [f, deps] of files) {
    const a = nodeOf(f);
    if (!g.has(a)) g.set(a, new Map());
    for (const t of deps) {
      const b = nodeOf(t);
      if (a === b) continue;
      const e = g.get(a)!;
      e.set(b, [...(e.get(b) ?? []), `${f} → ${t}`]);
    }
  }
  return g;
}

/** Strongly connected components with more than one node (Tarjan): each is a cycle. */
export function cycles(nodes: Iterable<string>, next: (n: string) => Iterable<string>): string[][] {
  let index = 0;
  const idx = new Map<string, number>(), low = new Map<string, number>(), stack: string[] = [], on = new Set<string>(), out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index); low.set(v, index); index++;
    stack.push(v); on.add(v);
    for (const w of next(v)) {
      if (!idx.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const c: string[] = [];
      let w: string;
      do { w = stack.pop()!; on.delete(w); c.push(w); } while (w !== v);
      if (c.length > 1) out.push(c.sort());
    }
  };
  for (const v of nodes) if (!idx.has(v)) visit(v);
  return out;
}

/** Folder-level cycles of a tree, each with the imports that close it (empty: none). */
export function folderCycles(root: string): { folders: string[]; imports: string[] }[] {
  const fg = folderGraph(importGraph(root));
  return cycles(fg.keys(), (n) => fg.get(n)?.keys() ?? []).map((c) => ({
    folders: c,
    imports: c.flatMap((a) => c.flatMap((b) => fg.get(a)?.get(b) ?? [])),
  }));
}

/** File-level cycles of a tree (empty: none). */
export function fileCycles(root: string): string[][] {
  const g = importGraph(root);
  return cycles(g.keys(), (n) => g.get(n) ?? []);
}

/**
 * The gallery of a scan (issue 30), opened the way a reader opens it: headless Chromium loads
 * gallery.html from disk (offline, plotly.js embedded once), the chart along the slice axis renders
 * (Plotly's SVG is in the page) and no script error is thrown. CI installs chromium (.ci/run); a
 * machine without it fails this test with the install line.
 */
import { strict as assert } from "assert";
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { scanGeometry, scanScore, ZONES } from "../lib/lesions/scan";
import { galleryHtml, GalleryScan } from "../lib/predict/gallery";
import { SeriesRow } from "../lib/predict/rows";
import { cleanupTempDirs, tempDir } from "./data-fixtures";

after(cleanupTempDirs);

function chromium(): string {
  for (const c of ["chromium", "chromium-browser", "google-chrome"]) if (spawnSync("which", [c]).status === 0) return c;
  throw new Error("chromium is not installed: apt-get install -y --no-install-recommends chromium (.ci/run does)");
}

/** Two series: one with a lesion in its right lower zone, one without lung on its first slices. */
function scans(): GalleryScan[] {
  const H = 24, W = 32;
  const out: GalleryScan[] = [];
  for (const [name, lesionSlices] of [["with-lesion", [0, 1, 2]], ["clean", []]] as const) {
    const slices = Array.from({ length: 12 }, (_, z) => {
      const lung = new Uint8Array(H * W), lesion = new Uint8Array(H * W);
      for (let y = 6; y < 18; y++) for (let x = 3; x < 29; x++) if (z >= 2 && x !== 15 && x !== 16) lung[y * W + x] = 1;
      if ((lesionSlices as readonly number[]).includes(z - 2)) for (let y = 8; y < 14; y++) for (let x = 4; x < 12; x++) lesion[y * W + x] = 1;
      return { lung, lesion };
    });
    const g = scanGeometry({ orientation: [1, 0, 0, 0, 1, 0], position: [0, 0, 0] }, { position: [0, 0, 22] }, [0.7, 0.7, 2]);
    const sc = scanScore(slices, H, W, g);
    const row: SeriesRow = {
      series: name, folder: `/scans/${name}`, slices: 12, burden: sc.burden, covid: sc.burden >= 0.006, threshold: 0.006, lungMl: sc.lungMm3! / 1000, lesionMl: sc.lesionMm3! / 1000,
      zones: sc.zones, severity: sc.severity, patientSides: sc.patientSides, lungSlices: 10, lungRemovedSlices: 0, drivenBy: { index: 3, input: "x" }, order: "position",
    };
    out.push({ row, perSlice: sc.perSlice, pixelMm2: 0.49, extent: sc.extent, superiorLast: g.superiorLast, shown: [] });
  }
  return out;
}

describe("the gallery of a scan in a browser", function () {
  it("headless Chromium renders each series' chart (plotly.js embedded once, offline) with no script error", async function () {
    this.timeout(180_000);
    const browser = chromium();
    const html = await galleryHtml({ title: "t", model: "lesion-burden", threshold: 2.4e-5, viewSize: 64, window: "w", gradcam: "none", slices: [], scans: scans(), errors: [] });
    assert.equal((html.match(/DecompressionStream/g) ?? []).length, 1, "plotly.js once for the page");
    assert.equal((html.match(/class="covidct-plot"/g) ?? []).length, 2);
    for (const z of ZONES) assert.ok(html.includes(`>${z}<`), `zone ${z} in the table`);
    assert.match(html, /not COVID-19 specifically/);
    assert.match(html, /Zones, not lobes/);
    const file = path.join(tempDir("gallery-browser"), "gallery.html");
    fs.writeFileSync(file, html);
    const r = spawnSync(browser, ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000", "--dump-dom", `file://${file}`], { encoding: "utf8", timeout: 120_000, maxBuffer: 256 * 1024 * 1024 });
    assert.equal(r.status, 0, r.stderr);
    const dom = r.stdout;
    // Plotly draws into an SVG of class main-svg in each chart's div; a failed load leaves a sentence there instead.
    assert.equal((dom.match(/<svg class="main-svg"/g) ?? []).length >= 2, true, "both charts drawn");
    // (The page's script holds those sentences too: a failure shows as the div's text, right after its tag.)
    assert.ok(!/>(Could not render the chart|plotly\.js was not loaded)/.test(dom), "no chart failed");
    assert.ok(!/Uncaught/.test(r.stderr), r.stderr.split("\n").filter((l) => /Uncaught/.test(l)).join("\n"));
  });
});

import { strict as assert } from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as zlib from "zlib";
import { figureBundle, plotlyBundleBase64, resetPlotlyEmbedding, tableBundle, writeFigureHtml } from "../lib/plots";

describe("plots: one output, three representations", () => {
  const fig = { data: [{ type: "histogram", x: [30, 41, 41, 55], name: "age" }], layout: { title: { text: "Age" } } };

  it("carries the plotly JSON, an offline HTML fallback and text/plain", () => {
    resetPlotlyEmbedding();
    const b = figureBundle(fig);
    assert.deepEqual(Object.keys(b).sort(), ["application/vnd.plotly.v1+json", "text/html", "text/plain"]);
    assert.deepEqual(b["application/vnd.plotly.v1+json"].data, fig.data);
    assert.match(b["text/plain"], /Age/);
    assert.match(b["text/plain"], /histogram/);
    // The HTML never reaches for the network.
    assert.doesNotMatch(b["text/html"], /https?:\/\/|<script[^>]+src=/);
    assert.match(b["text/html"], /DecompressionStream/);
  });

  it("embeds plotly.js once per session, not once per chart", () => {
    resetPlotlyEmbedding();
    const first = figureBundle(fig)["text/html"];
    const second = figureBundle(fig)["text/html"];
    assert.ok(first.length > 1_000_000, `first chart carries plotly.js (${first.length} chars)`);
    assert.ok(second.length < 5_000, `second chart is small (${second.length} chars)`);
  });

  it("embeds the real plotly.js bundle, which inflates to the library", () => {
    const js = zlib.gunzipSync(Buffer.from(plotlyBundleBase64(), "base64")).toString("utf8");
    assert.ok(js.length > 3_000_000);
    assert.match(js, /newPlot/);
  });

  it("writes a standalone figure file atomically", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "covidct-fig-"));
    const file = writeFigureHtml(fig, path.join(dir, "age.html"));
    const html = fs.readFileSync(file, "utf8");
    assert.match(html, /^<!DOCTYPE html>/);
    assert.match(html, /DecompressionStream/);
    assert.deepEqual(fs.readdirSync(dir), ["age.html"], "no temp file left behind");
    fs.rmSync(dir, { recursive: true });
  });

  it("renders tables as HTML and aligned text", () => {
    const t = tableBundle(["metric", "paper", "ours"], [["images", 349, 349], ["patients", 216, null]], { caption: "Table 1" });
    assert.match(t["text/html"], /<th>paper<\/th>/);
    assert.match(t["text/html"], /<td>–<\/td>/);
    const lines = t["text/plain"].split("\n");
    assert.equal(lines[0], "Table 1");
    assert.match(lines[3], /^images\s+349\s+349$/);
  });
});

/**
 * DICOM CT slices (lib/data/dicom.ts, read with dicom-parser) against files written by dcmjs: HU
 * from stored values and rescale, the lung window, series order, and the refusals.
 */
import { strict as assert } from "assert";
import * as fs from "fs";
import * as path from "path";
import { isDicomFile, LUNG_WINDOW, readDicomSlice, sortSeries, windowHu } from "../lib/data/dicom";
import { collectInputs } from "../lib/data/inputs";
import { cleanupTempDirs, tempDir } from "./data-fixtures";
import { phantom, writeDicom } from "./support/dicom";

after(cleanupTempDirs);

describe("DICOM slices", () => {
  it("stored values × slope + intercept are Hounsfield units, and the lung window maps them as stated", () => {
    const dir = tempDir("dicom-hu");
    const rows = 40, columns = 48;
    const stored = new Int16Array(rows * columns);
    // Known HU at known pixels, with intercept −1024 and slope 2 (stored = (HU + 1024) / 2).
    const known: [number, number][] = [[0, -1350], [1, -600], [2, 150], [3, -2000], [4, 1000], [5, -1000], [6, 40]];
    for (const [i, hu] of known) stored[i] = (hu + 1024) / 2;
    const f = writeDicom(path.join(dir, "a.dcm"), { stored, rows, columns, slope: 2, intercept: -1024 });
    assert.ok(isDicomFile(f));
    const s = readDicomSlice(f);
    assert.equal(s.rows, rows);
    assert.equal(s.columns, columns);
    for (const [i, hu] of known) assert.equal(s.hu[i], hu, `pixel ${i}`);
    const g = windowHu(s.hu);
    // [−1350, +150] HU → [0, 255]: −600 is the level, the middle of the ramp.
    assert.deepEqual(LUNG_WINDOW, { level: -600, width: 1500 });
    assert.deepEqual(known.map(([i]) => g[i]), [0, 128, 255, 0, 255, Math.round((350 / 1500) * 255), Math.round((1390 / 1500) * 255)]);
  });

  it("a series in shuffled file order is sorted by position along the slice normal, else by instance number", () => {
    const dir = tempDir("dicom-series");
    const zs = [10, -5, 0, 5, -10];
    const files = zs.map((z, k) => writeDicom(path.join(dir, `f${k}.dcm`), { stored: phantom(32, 32, -1024), rows: 32, columns: 32, intercept: -1024, z, instanceNumber: 100 - z }));
    const sorted = sortSeries(files.map(readDicomSlice));
    assert.equal(sorted.by, "position");
    assert.deepEqual(sorted.slices.map((s) => s.position![2]), [-10, -5, 0, 5, 10]);
    const noPos = tempDir("dicom-series-inst");
    const byInstance = [3, 1, 2].map((n) => readDicomSlice(writeDicom(path.join(noPos, `x${n}.dcm`), { stored: phantom(32, 32, 0), rows: 32, columns: 32, instanceNumber: n })));
    const s2 = sortSeries(byInstance);
    assert.equal(s2.by, "instance number");
    assert.deepEqual(s2.slices.map((s) => s.instanceNumber), [1, 2, 3]);
    // Slices at one position: by instance number, not file name.
    const tied = tempDir("dicom-series-tie");
    const ties = [3, 2, 1].map((n, k) => readDicomSlice(writeDicom(path.join(tied, `f${k}.dcm`), { stored: phantom(32, 32, 0), rows: 32, columns: 32, z: 0, instanceNumber: n })));
    assert.deepEqual(sortSeries(ties).slices.map((s) => path.basename(s.file)), ["f2.dcm", "f1.dcm", "f0.dcm"]);
  });

  it("refuses, naming the file: no pixel data, not CT, a compressed syntax not decoded (by name), no rescale, a truncated file, an empty file", () => {
    const dir = tempDir("dicom-bad");
    const px = { stored: phantom(32, 32, 0), rows: 32, columns: 32 };
    const cases: [string, RegExp][] = [
      [writeDicom(path.join(dir, "nopixels.dcm"), { ...px, noPixels: true }), /has no pixel data \(7FE0,0010\)/],
      [writeDicom(path.join(dir, "mr.dcm"), { ...px, modality: "MR" }), /modality is MR, not CT/],
      [writeDicom(path.join(dir, "jpeg12.dcm"), { ...px, transferSyntax: "1.2.840.10008.1.2.4.51" }), /transfer syntax 1\.2\.840\.10008\.1\.2\.4\.51 \(JPEG Extended \(Process 2 & 4\)\) is compressed in a way this reader does not decode: convert/],
      [writeDicom(path.join(dir, "norescale.dcm"), { ...px, noRescale: true }), /has no Rescale Slope \(0028,1053\) and no Rescale Intercept \(0028,1052\): its Hounsfield units are unknown; export the series again with them/],
    ];
    cases.push([writeDicom(path.join(dir, "odd.dcm"), { ...px, transferSyntax: "1.2.3.4" }), /transfer syntax 1\.2\.3\.4 is not one this reader supports/]);
    cases.push([writeDicom(path.join(dir, "slope-abc.dcm"), { ...px, slope: "abc" as never }), /Rescale Slope \(0028,1053\) is 'abc'/]);
    cases.push([writeDicom(path.join(dir, "slope-0.dcm"), { ...px, slope: 0 }), /Rescale Slope \(0028,1053\) is '0'/]);
    cases.push([writeDicom(path.join(dir, "mismatch.dcm"), { ...px, rows: 16, columns: 16 }), /the header does not match the pixels/]);
    const whole = fs.readFileSync(writeDicom(path.join(dir, "whole.dcm"), px));
    const cut = path.join(dir, "cut.dcm");
    fs.writeFileSync(cut, whole.subarray(0, whole.length - 500));
    cases.push([cut, /truncated/]);
    const empty = path.join(dir, "empty.dcm");
    fs.writeFileSync(empty, "");
    cases.push([empty, /empty file/]);
    for (const [file, why] of cases) {
      assert.throws(() => readDicomSlice(file), (e: Error) => {
        assert.ok(e.message.startsWith(`${file}: `), e.message);
        assert.match(e.message, why);
        assert.ok(!e.message.includes("\n"), "one line");
        return true;
      });
    }
  });

  it("collectInputs: a folder of DICOM slices is one series, written as lung-windowed PNGs in series order", async () => {
    const dir = tempDir("dicom-collect");
    const series = path.join(dir, "scan");
    for (const [k, z] of [[0, 3], [1, 1], [2, 2]]) writeDicom(path.join(series, `s${k}.dcm`), { stored: phantom(64, 64, -1024, 0.01 * z), rows: 64, columns: 64, intercept: -1024, z, instanceNumber: z });
    fs.writeFileSync(path.join(series, "notes.txt"), "not a slice");
    const work = tempDir("dicom-collect-out");
    const c = await collectInputs([series], work);
    assert.deepEqual(c.errors, []);
    assert.deepEqual(c.skipped, [path.join(series, "notes.txt")]);
    assert.equal(c.series.length, 1);
    assert.equal(c.series[0].order, "position");
    assert.deepEqual(c.series[0].slices.map((s) => path.basename(s.input)), ["s1.dcm", "s2.dcm", "s0.dcm"]);
    assert.ok(c.series[0].slices.every((s) => s.file.startsWith(work) && fs.existsSync(s.file)));
  });
});

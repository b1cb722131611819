/**
 * Mocha's spec reporter plus one closing line in the plain form CI reads:
 * "tests: N passed, N failed" (", N skipped" when any are pending).
 */
import * as Mocha from "mocha";

const { EVENT_RUN_END } = Mocha.Runner.constants;

class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    runner.once(EVENT_RUN_END, () => {
      const s = runner.stats ?? { passes: 0, failures: 0, pending: 0 };
      // Printed after the spec summary (Spec's own run-end handler was registered first).
      process.stdout.write(`\ntests: ${s.passes} passed, ${s.failures} failed${s.pending ? `, ${s.pending} skipped` : ""}\n`);
    });
  }
}

export = SummaryReporter;

package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.scenario.BioSetSplitStack;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** PCT's decision bound is learned from earlier runs, and decisions count only real choices. */
class PctBoundTest {

    // Proves the learned bound: the first PCT run uses the initial bound, every later run uses the
    // largest decision count of the runs before it, and a decision is counted only where more than
    // one task could run (so decisions <= steps, strictly fewer here, since main runs alone at first).
    @Test
    void boundIsLearnedFromEarlierRuns() {
        SimRunner runner = new SimRunner(SimConfig.builder().strategy("pct:2").build());
        List<SimResult> results = new ArrayList<>();
        runner.campaign(8, 12, false, false, BioSetSplitStack.standard(true), results::add);
        assertEquals(StrategySpec.INITIAL_BOUND, results.get(0).pctStepBound());
        long maxSoFar = StrategySpec.INITIAL_BOUND;
        for (SimResult r : results) {
            assertEquals(maxSoFar, r.pctStepBound(), "bound of seed " + r.seed());
            assertTrue(r.decisions() < r.steps(), r.summary());
            maxSoFar = Math.max(maxSoFar, r.decisions());
        }
        assertTrue(maxSoFar > StrategySpec.INITIAL_BOUND, "runs took more decisions than the initial bound: " + maxSoFar);
    }
}

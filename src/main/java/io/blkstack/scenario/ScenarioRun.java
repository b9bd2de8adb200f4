package io.blkstack.scenario;

import java.util.Map;

/**
 * The result of one scenario × variant × engine run: one row of the table.
 *
 * @param scenario the scenario's name
 * @param seed the seed document's number
 * @param variant the variant's label
 * @param legacy whether the variant is the old design
 * @param expectFinding whether a finding is expected
 * @param engine the engine
 * @param outcome what happened: a checker {@code Outcome} name, {@code OK}, {@code STALL} (watchdog), ...
 * @param finding whether something was found (deadlock, livelock, stall, crash, ...)
 * @param schedules schedules run (sim), attempts (threads)
 * @param firstFindingAt the schedule (1-based) of the first finding, 0 for none
 * @param elapsedNanos real time the run took
 * @param knot the wait-for knot (sim) or the watchdog report (threads), empty for none
 * @param replay the command that replays the finding, empty for none
 * @param coverage the coverage counters summed over the run
 * @param note one line: what the run proved or why it is suspicious
 */
public record ScenarioRun(String scenario, String seed, String variant, boolean legacy, boolean expectFinding, Scenario.Engine engine,
        String outcome, boolean finding, int schedules, int firstFindingAt, long elapsedNanos, String knot, String replay,
        Map<String, Long> coverage, String note) {

    /** Whether the run did what its policy promises: a finding exactly where one is expected. */
    public boolean asExpected() {
        return expectFinding == finding;
    }
}

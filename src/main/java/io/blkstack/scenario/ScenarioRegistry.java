package io.blkstack.scenario;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The seed scenarios by name, in seed order. Scenarios for the later seeds ({@code bufio-shrinker}
 * for 003, {@code split-worker} for 004) implement {@link Scenario} and are added to
 * {@link #SCENARIOS} with one line each.
 *
 * <p>Each scenario also has a <em>hard</em> shape, {@code NAME-hard} (issue 13): the same stack and
 * policies with fewer tasks or more headroom, so that most schedules pass and the deadlock needs a
 * specific interleaving. They measure the search ({@code scenario stats hard}); {@link #all} is
 * the seed shapes only, which deadlock on nearly every schedule.
 */
public final class ScenarioRegistry {

    private static final Map<String, Scenario> SCENARIOS = new LinkedHashMap<>();
    private static final Map<String, Scenario> HARD = new LinkedHashMap<>();

    static {
        add(SCENARIOS, new BiosetRescuerScenario(false));
        add(SCENARIOS, new DmDepthFirstScenario(false));
        add(SCENARIOS, new MapSgBounceScenario(false));
        add(SCENARIOS, new BufioShrinkerScenario(false));
        add(SCENARIOS, new SplitWorkerScenario(false));
        add(HARD, new BiosetRescuerScenario(true));
        add(HARD, new DmDepthFirstScenario(true));
        add(HARD, new MapSgBounceScenario(true));
        add(HARD, new BufioShrinkerScenario(true));
        add(HARD, new SplitWorkerScenario(true));
    }

    private ScenarioRegistry() {
    }

    private static void add(Map<String, Scenario> into, Scenario s) {
        if (SCENARIOS.containsKey(s.name()) || into.putIfAbsent(s.name(), s) != null) {
            throw new IllegalStateException("scenario " + s.name() + " registered twice");
        }
    }

    /** Every scenario in seed order. */
    public static List<Scenario> all() {
        return new ArrayList<>(SCENARIOS.values());
    }

    /** The hard shape of every scenario, in seed order. */
    public static List<Scenario> hard() {
        return new ArrayList<>(HARD.values());
    }

    /** The scenario called {@code name}: a seed shape or a hard one. */
    public static Scenario byName(String name) {
        Scenario s = SCENARIOS.containsKey(name) ? SCENARIOS.get(name) : HARD.get(name);
        if (s == null) {
            throw new IllegalArgumentException("unknown scenario '" + name + "'; known: " + String.join(", ", SCENARIOS.keySet())
                    + ", and each with -hard");
        }
        return s;
    }
}

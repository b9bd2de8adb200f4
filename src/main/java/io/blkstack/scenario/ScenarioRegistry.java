package io.blkstack.scenario;

import java.util.ArrayList;
import java.util.Collections;
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

    private static final Map<String, Scenario> SCENARIOS = index(new BiosetRescuerScenario(false),
            new DmDepthFirstScenario(false), new MapSgBounceScenario(false), new BufioShrinkerScenario(false),
            new SplitWorkerScenario(false));
    private static final Map<String, Scenario> HARD = index(new BiosetRescuerScenario(true),
            new DmDepthFirstScenario(true), new MapSgBounceScenario(true), new BufioShrinkerScenario(true),
            new SplitWorkerScenario(true));

    private ScenarioRegistry() {
    }

    /** The scenarios by name, in the given order; unmodifiable. */
    private static Map<String, Scenario> index(Scenario... scenarios) {
        Map<String, Scenario> map = new LinkedHashMap<>();
        for (Scenario s : scenarios) {
            if (map.putIfAbsent(s.name(), s) != null) {
                throw new IllegalStateException("scenario " + s.name() + " registered twice");
            }
        }
        return Collections.unmodifiableMap(map);
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

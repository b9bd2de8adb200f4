package io.blkstack.scenario;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The seed scenarios by name, in seed order. Scenarios for the later seeds ({@code bufio-shrinker}
 * for 003, {@code split-worker} for 004) implement {@link Scenario} and are added to
 * {@link #SCENARIOS} with one word each.
 */
public final class ScenarioRegistry {

    private static final Map<String, Scenario> SCENARIOS = byName(new BiosetRescuerScenario(),
            new DmDepthFirstScenario(), new MapSgBounceScenario(), new BufioShrinkerScenario(), new SplitWorkerScenario());

    private ScenarioRegistry() {
    }

    /** The scenarios by name, in the given order; unmodifiable. */
    private static Map<String, Scenario> byName(Scenario... scenarios) {
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

    /** The scenario called {@code name}. */
    public static Scenario byName(String name) {
        Scenario s = SCENARIOS.get(name);
        if (s == null) {
            throw new IllegalArgumentException("unknown scenario '" + name + "'; known: " + String.join(", ", SCENARIOS.keySet()));
        }
        return s;
    }
}

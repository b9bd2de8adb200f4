package io.blkstack.sim;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The kernel counters that show a run reached the conditions the forward-progress machinery is
 * for: a reserve was used, a task waited on a pool, a bio set punted to its rescuer, a worker pool
 * sent mayday, a worker could not be created, the page allocator refused, a request bounced. A
 * campaign whose counters are all zero proved nothing. {@code blkstack check} prints them and the
 * scenario engines report them; both read this one list.
 */
public final class Coverage {

    /** The counters, in the order they are shown. */
    public static final List<String> COUNTERS = List.of("mempool.reserve-used", "mempool.waits",
            "bioset.rescuer-punts", "wq.maydays", "wq.rescuer-runs", "wq.worker-create-failures",
            "pages.alloc-failures", "scenario.bounces", "scenario.private-bounces");

    private Coverage() {
    }

    /** The coverage counters picked from {@code counters}, in order; a counter never touched is 0. */
    public static Map<String, Long> of(Map<String, Long> counters) {
        Map<String, Long> out = new LinkedHashMap<>();
        for (String name : COUNTERS) {
            out.put(name, counters.getOrDefault(name, 0L));
        }
        return out;
    }
}

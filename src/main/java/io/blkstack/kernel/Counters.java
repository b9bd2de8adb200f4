package io.blkstack.kernel;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Named event counters of one kernel (reserve used, rescuer punts, maydays, ...). Components look
 * a counter up once and keep it, so counting on the hot path is one atomic add.
 */
public final class Counters {

    private final ConcurrentHashMap<String, AtomicLong> counters = new ConcurrentHashMap<>();

    /** The counter with this name, created at zero on first use. */
    public AtomicLong get(String name) {
        return counters.computeIfAbsent(name, n -> new AtomicLong());
    }

    /** The current value of a counter, zero if it was never created. */
    public long value(String name) {
        AtomicLong c = counters.get(name);
        return c == null ? 0 : c.get();
    }

    /** All counters by name. */
    public Map<String, Long> snapshot() {
        TreeMap<String, Long> map = new TreeMap<>();
        counters.forEach((k, v) -> map.put(k, v.get()));
        return map;
    }
}

package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;

class SimTraceTest {

    private static long hashOf(Consumer<SimTrace> events) {
        SimTrace trace = new SimTrace(null);
        events.accept(trace);
        return trace.hash();
    }

    @Test
    void theSameEventsGiveTheSameHashAndAnyChangeAnother() {
        Consumer<SimTrace> base = t -> {
            t.record("sim", "pick", "t1", "/", 3);
            t.record("t1", "sleep", "");
        };
        assertEquals(hashOf(base), hashOf(base));
        List<Consumer<SimTrace>> variants = List.of(
                base,
                t -> { // order
                    t.record("t1", "sleep", "");
                    t.record("sim", "pick", "t1", "/", 3);
                },
                t -> { // the number
                    t.record("sim", "pick", "t1", "/", 2);
                    t.record("t1", "sleep", "");
                },
                t -> { // who
                    t.record("sim", "pick", "t2", "/", 3);
                    t.record("t1", "sleep", "");
                },
                t -> { // a part moved across an event's boundary
                    t.record("sim", "pick", "t1", "/", 3);
                    t.record("t1", "sleep", "x");
                },
                t -> { // one event fewer
                    t.record("sim", "pick", "t1", "/", 3);
                },
                t -> { // details whose 32-bit String hash codes are equal ("Aa" and "BB")
                    t.record("sim", "pick", "t1", "/", 3);
                    t.record("t1", "sleep", "xAay");
                },
                t -> {
                    t.record("sim", "pick", "t1", "/", 3);
                    t.record("t1", "sleep", "xBBy");
                },
                t -> { // the same characters, cut between parts at another place
                    t.record("sim", "pick", "t1", "/", 3);
                    t.record("t1", "slee", "p");
                },
                t -> { // the virtual time
                    long[] now = {0};
                    t.clock(() -> now[0]);
                    t.record("sim", "pick", "t1", "/", 3);
                    now[0] = 1;
                    t.record("t1", "sleep", "");
                });
        Set<Long> hashes = new HashSet<>();
        for (Consumer<SimTrace> v : variants) {
            hashes.add(hashOf(v));
        }
        assertEquals(variants.size(), hashes.size(), "every variant has its own hash");
        assertNotEquals(hashOf(t -> { }), hashOf(t -> t.record("a", "b", "")));
    }
}

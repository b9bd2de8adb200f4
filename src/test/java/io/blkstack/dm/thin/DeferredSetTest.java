package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The pool's count of I/O in flight by generation: what a barrier waits for, and what it does not. */
class DeferredSetTest {

    private TestKernel tk;

    @BeforeEach
    void attach() {
        tk = new TestKernel("deferred-set", 1L << 20, Policies.defaults(), Faults.NONE); // spin locks need a task
    }

    @AfterEach
    void detach() {
        tk.close();
    }

    @Test
    void aBarrierWaitsForTheIoBeforeItAndNotForTheIoAfterIt() {
        DeferredSet set = new DeferredSet("test");
        assertEquals(-1, set.barrier(), "no I/O in flight: the barrier has passed already");
        long early = set.enter();
        long barrier = set.barrier();
        long late = set.enter();
        assertFalse(set.passed(barrier));
        set.leave(late);
        assertFalse(set.passed(barrier), "I/O after the barrier ended, the one before it has not");
        assertTrue(set.leave(early), "the oldest generation moved on");
        assertTrue(set.passed(barrier));
        assertEquals(0, set.inFlight());
    }

    @Test
    void barriersPassInOrderAsTheirGenerationsDrain() {
        DeferredSet set = new DeferredSet("test");
        long first = set.enter();
        long b1 = set.barrier();
        long second = set.enter();
        long b2 = set.barrier();
        set.leave(second);
        assertFalse(set.passed(b1));
        assertFalse(set.passed(b2), "b2 also waits for the I/O before b1");
        set.leave(first);
        assertTrue(set.passed(b1));
        assertTrue(set.passed(b2));
    }

    @Test
    void aFullRingSharesTheNewestGenerationAndMovesOnWhenOneFrees() {
        DeferredSet set = new DeferredSet("test");
        long[] held = new long[DeferredSet.GENERATIONS];
        long[] barriers = new long[DeferredSet.GENERATIONS];
        for (int i = 0; i < DeferredSet.GENERATIONS; i++) {
            held[i] = set.enter();
            barriers[i] = set.barrier();
        }
        long stuck = set.barrier();
        assertEquals(barriers[DeferredSet.GENERATIONS - 1], stuck,
                "with the ring full, a new barrier shares the newest generation");
        set.leave(held[0]); // frees the oldest counter: a new generation starts
        long after = set.enter();
        assertTrue(after > stuck, "I/O after the freed counter joins a new generation, so it cannot hold the barrier");
        for (int i = 1; i < DeferredSet.GENERATIONS; i++) {
            set.leave(held[i]);
        }
        assertTrue(set.passed(stuck), "the shared barrier passed without waiting for the later I/O");
        assertFalse(set.passed(set.barrier()));
        set.leave(after);
        assertEquals(0, set.inFlight());
    }

    @Test
    void leavingTwiceIsABug() {
        DeferredSet set = new DeferredSet("test");
        long g = set.enter();
        set.leave(g);
        assertThrows(IllegalStateException.class, () -> set.leave(g));
    }
}

package io.blkstack.block;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.TrackedRequests.TrackedRequest;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The rules of {@link TrackedRequests}, from its contract: plain writes never wait for each other;
 * a serialising request waits for every earlier overlapping request, and every later overlapping
 * request waits for it; nobody waits for a later request or for a range that does not overlap.
 * A waiting task is observed with {@link Task#awaitWait} (woken when the wait begins, no polling).
 */
class TrackedRequestsTest {

    private static final long WAIT_NANOS_MAX = 10_000_000_000L;

    private final TestKernel tk = new TestKernel("tracked");
    private final TrackedRequests list = new TrackedRequests("dev");

    @AfterEach
    void close() {
        tk.close();
    }

    /** Starts a task that registers {@code r} and records when it got through. */
    private Task register(TrackedRequest r, long start, long end, boolean serialising, AtomicBoolean through) {
        return tk.kernel.spawn("register", TaskKind.USER, () -> {
            list.begin(r, start, end, serialising);
            through.set(true);
        });
    }

    /**
     * Proves a lost request (its owner met a fault) is waited for by nobody: a read-modify-write
     * waiting for it gives up when it is lost, a later one gives up at once, both unregistered; a
     * plain write, which never waited for it, still registers; and the lost one stays until it ends.
     */
    @Test
    void aRequestThatConflictsWithALostOneGivesUpInsteadOfWaiting() {
        TrackedRequest lostWrite = new TrackedRequest("lost");
        assertTrue(list.begin(lostWrite, 0, 4096, false));
        TrackedRequest rmw = new TrackedRequest("rmw");
        AtomicBoolean registered = new AtomicBoolean(true);
        Task t = tk.kernel.spawn("register", TaskKind.USER, () -> registered.set(list.begin(rmw, 0, 1024, true)));
        assertSame(rmw, t.awaitWait(w -> w == rmw, WAIT_NANOS_MAX), "the read-modify-write waits for the live write");
        list.lose(lostWrite);
        tk.kernel.scheduler().join(t);
        assertFalse(registered.get(), "the read-modify-write gave up on the lost write");
        assertFalse(list.begin(new TrackedRequest("later rmw"), 512, 1024, true), "a later one gives up at once");
        TrackedRequest plain = new TrackedRequest("plain");
        assertTrue(list.begin(plain, 0, 512, false), "a plain write never waited for a plain write");
        assertEquals(2, list.count(), "the lost write and the plain one");
        list.end(plain);
        list.end(lostWrite); // it came back after all
        assertTrue(list.begin(rmw, 0, 1024, true), "nothing lost is left");
        list.end(rmw);
        assertEquals(0, list.count());
    }

    @Test
    void plainWritesNeverWaitForEachOther() {
        TrackedRequest a = new TrackedRequest("a");
        TrackedRequest b = new TrackedRequest("b");
        list.begin(a, 0, 4096, false);
        list.begin(b, 512, 1024, false); // overlaps, and returns at once on this very thread
        assertEquals(2, list.count());
        list.end(a);
        list.end(b);
        assertEquals(0, list.count());
    }

    @Test
    void aSerialisingRequestWaitsForAnEarlierOverlappingWriteOnly() {
        TrackedRequest write = new TrackedRequest("write");
        TrackedRequest elsewhere = new TrackedRequest("elsewhere");
        list.begin(write, 0, 512, false);
        list.begin(elsewhere, 4096, 8192, false);
        TrackedRequest rmw = new TrackedRequest("rmw");
        AtomicBoolean through = new AtomicBoolean();
        Task t = register(rmw, 0, 1024, true, through);
        assertSame(rmw, t.awaitWait(w -> w == rmw, WAIT_NANOS_MAX), "the read-modify-write waits");
        list.end(elsewhere);
        assertFalse(through.get(), "a range that does not overlap releases nobody");
        list.end(write);
        tk.kernel.scheduler().join(t);
        assertTrue(through.get());
        list.end(rmw);
    }

    @Test
    void laterOverlappingWritesWaitForASerialisingRequestAndOthersDoNot() {
        TrackedRequest rmw = new TrackedRequest("rmw");
        list.begin(rmw, 512, 1024, true);
        TrackedRequest apart = new TrackedRequest("apart");
        list.begin(apart, 1024, 2048, false); // adjacent, not overlapping: no wait
        TrackedRequest write = new TrackedRequest("write");
        AtomicBoolean through = new AtomicBoolean();
        Task t = register(write, 0, 4096, false, through);
        assertSame(write, t.awaitWait(w -> w == write, WAIT_NANOS_MAX), "the overlapping write waits");
        list.end(apart);
        list.end(rmw);
        tk.kernel.scheduler().join(t);
        assertTrue(through.get());
        list.end(write);
        assertEquals(0, list.count());
    }

    @Test
    void misuseIsRefused() {
        TrackedRequest r = new TrackedRequest("r");
        assertThrows(IllegalStateException.class, () -> list.end(r));
        list.begin(r, 0, 512, false);
        assertThrows(IllegalStateException.class, () -> list.begin(r, 0, 512, false));
        assertThrows(IllegalArgumentException.class, () -> list.begin(new TrackedRequest("bad"), 10, 5, false));
        list.end(r);
    }
}

package io.blkstack.jmh;

import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import java.util.ArrayDeque;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * One {@link Mempool#alloc} and {@link Mempool#free} pair, on the two paths of the kernel's
 * algorithm: {@code allocator}, the underlying allocator has an element (step 1 of the alloc, and
 * the free goes back to the allocator because the reserve is full); {@code reserve}, the allocator
 * is empty, so the element comes from the reserve (step 2) and the free refills the reserve and
 * wakes the (absent) waiters. The allocator is a bounded stash of preallocated objects, so neither
 * path measures the Java heap.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class MempoolBench {

    /** Which step of the alloc supplies the element. */
    @Param({"allocator", "reserve"})
    public String path;

    private static final int RESERVE = 4;

    private KernelFixture fixture;
    private Mempool<Object> pool;

    /** A bounded stash of objects: the pool's underlying allocator. */
    private static final class Stash implements Mempool.Allocator<Object> {
        private final ArrayDeque<Object> free = new ArrayDeque<>();

        Stash(int count) {
            for (int i = 0; i < count; i++) {
                free.push(new Object());
            }
        }

        @Override
        public Object alloc(int gfp) {
            return free.poll();
        }

        @Override
        public void free(Object element) {
            free.push(element);
        }
    }

    @Setup(Level.Trial)
    public void setUp() {
        fixture = new KernelFixture("mempool");
        // "reserve": the reserve's preallocation empties the stash, so every alloc reaches step 2.
        int stashed = path.equals("reserve") ? RESERVE : RESERVE + 1;
        pool = new Mempool<>(fixture.kernel(), "jmh", RESERVE, new Stash(stashed));
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        fixture.close(); // closes the pool, which checks every element came back
    }

    @Benchmark
    public Object allocFree() {
        Object element = pool.alloc(Gfp.NOIO);
        pool.free(element);
        return element;
    }
}

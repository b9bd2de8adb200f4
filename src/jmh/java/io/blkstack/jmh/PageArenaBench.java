package io.blkstack.jmh;

import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.mem.PageAllocator;
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
 * Taking {@code count} pages from the page arena and giving them back: {@link PageAllocator#allocBulk}
 * and {@link PageAllocator#freeBulk} (one lock round each, as the NBD server fills a request's
 * payload) against the same count taken and returned one {@link PageAllocator#alloc} at a time.
 * The arena is far above its watermarks, so neither path reclaims.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class PageArenaBench {

    /** Pages per round (4 KiB each: 64 KiB and 1 MiB). */
    @Param({"16", "256"})
    public int count;

    private KernelFixture fixture;
    private PageAllocator arena;
    private Page[] pages;

    @Setup(Level.Trial)
    public void setUp() {
        fixture = new KernelFixture("arena");
        arena = fixture.kernel().pages();
        pages = new Page[count];
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        fixture.close();
    }

    @Benchmark
    public int bulk() {
        int taken = arena.allocBulk(Gfp.NOIO, pages, count);
        if (taken != count) {
            throw new IllegalStateException("bulk allocation took " + taken + " of " + count + " pages");
        }
        arena.freeBulk(pages, taken);
        return taken;
    }

    @Benchmark
    public int single() {
        for (int i = 0; i < count; i++) {
            pages[i] = arena.alloc(Gfp.NOIO);
        }
        for (int i = 0; i < count; i++) {
            arena.free(pages[i]);
        }
        return count;
    }
}

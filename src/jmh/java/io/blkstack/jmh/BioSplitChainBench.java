package io.blkstack.jmh;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.block.NullDevice;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
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
 * A 64 KiB bio (16 pages) cut into {@code fragments} equal pieces the way a device that splits to
 * its limits does: {@link Bio#split} off the front, {@link Bio#chain} it to the remainder, complete
 * the front (which walks the chain), and when the remainder is the last piece complete it, which
 * runs the callback. Includes allocating the bio and its vec array from a {@link BioSet}; nothing
 * is submitted to a device.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class BioSplitChainBench {

    /** Pieces the bio is cut into (1 = no split: the allocation and completion alone). */
    @Param({"1", "2", "16"})
    public int fragments;

    private static final int PAGES = 16;

    private KernelFixture fixture;
    private NullDevice device;
    private BioSet bioSet;
    private final Page[] pages = new Page[PAGES];
    private final BioEndIo put = Bio::put;

    @Setup(Level.Trial)
    public void setUp() {
        fixture = new KernelFixture("split");
        device = new NullDevice(fixture.kernel(), "null", 1L << 30, 0);
        bioSet = new BioSet(fixture.kernel(), "jmh", 4, 4, null, false);
        for (int i = 0; i < PAGES; i++) {
            pages[i] = fixture.kernel().pages().alloc(Gfp.KERNEL);
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        for (Page p : pages) {
            fixture.kernel().pages().free(p);
        }
        fixture.close(); // closes the bio set and the device
    }

    @Benchmark
    public int splitChain() {
        Bio bio = bioSet.alloc(Gfp.NOIO, PAGES);
        for (Page p : pages) {
            bio.addPage(p, Page.SIZE, 0);
        }
        bio.init(device, BioOp.WRITE, 0, 0);
        bio.setEndIo(put);
        int pieceSectors = bio.sectorCount() / fragments;
        int splits = 0;
        while (bio.sectorCount() > pieceSectors) {
            Bio front = Bio.split(bio, pieceSectors, Gfp.NOIO, bioSet);
            Bio.chain(front, bio);
            front.endio();
            splits++;
        }
        bio.endio();
        return splits;
    }
}

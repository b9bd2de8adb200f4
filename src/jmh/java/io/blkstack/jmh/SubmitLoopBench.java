package io.blkstack.jmh;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.NullDevice;
import io.blkstack.block.Submit;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
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
 * One 4 KiB write through {@link Submit#submitBio} into a stack of {@code layers} mapped devices,
 * each one {@code linear} target over the one below, over a null device that completes at once:
 * the depth-first submit loop, each layer's clone and remap, and the completions walking back up,
 * all on the benchmark thread. {@code layers} 0 is the null device alone.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class SubmitLoopBench {

    /** Linear mapped devices stacked over the null device. */
    @Param({"0", "1", "4"})
    public int layers;

    private KernelFixture fixture;
    private BlockDevice top;
    private BioSet bioSet;
    private Page page;
    private final BioEndIo put = Bio::put;
    private long sector;

    @Setup(Level.Trial)
    public void setUp() throws TableException {
        fixture = new KernelFixture("submit");
        BlockDevice device = new NullDevice(fixture.kernel(), "null", 1L << 30, 0);
        for (int i = 0; i < layers; i++) {
            BlockDevice lower = device;
            String line = "0 " + lower.capacitySectors() + " linear " + lower.name() + " 0";
            Table table = Table.parse(fixture.kernel(), "linear" + i, line, n -> n.equals(lower.name()) ? lower : null);
            device = new MappedDevice(fixture.kernel(), "linear" + i, table);
            }
        top = device;
        bioSet = new BioSet(fixture.kernel(), "jmh", 4, 4, null, false);
        page = fixture.kernel().pages().alloc(Gfp.KERNEL);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        fixture.kernel().pages().free(page);
        fixture.close(); // closes the bio set and the devices, top first
    }

    @Benchmark
    public long submit() {
        Bio bio = bioSet.alloc(Gfp.NOIO, 1);
        bio.addPage(page, Page.SIZE, 0);
        sector = (sector + 8) & ((1L << 21) - 1); // walk the first GiB in 4 KiB steps
        bio.init(top, BioOp.WRITE, 0, sector);
        bio.setEndIo(put);
        Submit.submitBio(bio);
        return sector;
    }
}

package io.blkstack.scenario;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.scenario.SplittingDevice;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * Seed 000, {@code bioset-rescuer}: a bcache-style stacking device ({@link SplittingDevice}) that
 * splits every bio into three pieces from ONE bio set while it runs inside the submit loop, over a
 * memory device, with a one-bio reserve and memory exhausted. Several user tasks write and read
 * back their own ranges at once.
 *
 * <p>Legacy (no rescuer, single FIFO submit list): two tasks can each hold a split front on their
 * own pending list while waiting for the set's next bio, which only those fronts' completion would
 * return. Fixed: before blocking, the set punts the task's pending fronts to its rescuer. The
 * third row keeps the depth-first submit order but switches the rescuer off, to show what the
 * order alone does for a driver that splits in a loop inside one call.
 *
 * <p>The hard shape ({@code bioset-rescuer-hard}) runs {@link #HARD_TASKS} tasks and leaves
 * {@link #HARD_SPARE_BIOS} free slab bios in the set besides its reserve, so a task finds a bio for
 * its second split unless the tasks hold enough fronts at the moment the spares run out.
 */
final class BiosetRescuerScenario implements Scenario {

    static final String DEVICE = "splitter";
    static final String LOWER = "mem0";
    static final long LOWER_BYTES = 1L << 20;
    static final long LATENCY_NANOS = 50_000;
    /** Each bio covers 6 sectors and the device splits at 2: two splits per bio. */
    static final int BIO_SECTORS = 6;
    static final int SPLIT_SECTORS = 2;
    /**
     * The hard shape's user tasks and free slab bios left in the set (the seed shape: 3 and 1):
     * found in about one schedule in ten (README, "Harder scenarios").
     */
    static final int HARD_TASKS = 4;
    static final int HARD_SPARE_BIOS = 3;

    private final boolean hard;

    /** The seed shape, or with {@code hard} the shape whose deadlock needs a specific interleaving. */
    BiosetRescuerScenario(boolean hard) {
        this.hard = hard;
    }

    @Override
    public String name() {
        return hard ? "bioset-rescuer-hard" : "bioset-rescuer";
    }

    @Override
    public String seed() {
        return "000";
    }

    @Override
    public String description() {
        return hard ? "as bioset-rescuer with " + HARD_TASKS + " tasks and " + HARD_SPARE_BIOS + " spare bios besides the reserve"
                : "a stacking device splits each bio twice from one bio set inside the submit loop; 1-bio reserve, memory exhausted";
    }

    @Override
    public Policies legacyPolicies() {
        return Policies.parse(List.of("submit-order=legacy", "bioset-rescuer=legacy"));
    }

    @Override
    public List<Variant> fixedVariants() {
        return List.of(
                new Variant("fixed", Policies.defaults(), false, false, "rescuer on, depth-first submit order"),
                new Variant("depth-first-only", Policies.parse(List.of("bioset-rescuer=legacy")), false, true,
                        "depth-first submit order without rescuer punting: not enough for a driver that splits"
                                + " twice inside one call (both fronts are queued before either goes down)"));
    }

    @Override
    public long memoryBytes() {
        return 256 * 1024;
    }

    @Override
    public String faults() {
        return "latency:" + LOWER + "=0.5/200us";
    }

    @Override
    public String seedResource() {
        return "waits on mempool " + DEVICE + "-bs-";
    }

    @Override
    public Consumer<Kernel> workload(Engine engine, Probe probe) {
        int tasks = hard ? HARD_TASKS : 3;
        int spare = hard ? HARD_SPARE_BIOS : 1;
        int ops = engine == Engine.SIM ? 2 : 10;
        return kernel -> run(kernel, probe, tasks, ops, spare);
    }

    /** Builds the stack, exhausts memory, runs the tasks, waits for them and gives everything back. */
    private static void run(Kernel kernel, Probe probe, int tasks, int ops, int spareBios) {
        MemoryDevice lower = new MemoryDevice(kernel, LOWER, LOWER_BYTES, LATENCY_NANOS);
        SplittingDevice dev = new SplittingDevice(kernel, DEVICE, lower, SPLIT_SECTORS, 1, true);
        BioSet userSet = new BioSet(kernel, "user", tasks, tasks, null, false);
        List<Page> dataPages = new ArrayList<>();
        for (int t = 0; t < tasks; t++) {
            dataPages.add(kernel.pages().alloc(Gfp.KERNEL));
        }
        MemoryPressure pressure = MemoryPressure.exhaust(kernel, spareBios, dev.bioSet());
        probe.watch(dev.bioSet().name() + " reserve", dev.bioSet().bioPool());
        probe.start(kernel);
        List<Task> workers = new ArrayList<>();
        for (int t = 0; t < tasks; t++) {
            int task = t;
            workers.add(kernel.spawn("user" + t, TaskKind.USER,
                    () -> writeAndVerify(dev, userSet, dataPages.get(task), task, ops, probe)));
        }
        for (Task w : workers) {
            kernel.scheduler().join(w);
        }
        probe.stop();
        pressure.release();
        dataPages.forEach(kernel.pages()::free);
    }

    /** One task: writes its bios one at a time and reads each back, checking the bytes. */
    private static void writeAndVerify(SplittingDevice dev, BioSet userSet, Page page, int task, int ops, Probe probe) {
        int bytes = BIO_SECTORS * Bio.SECTOR_SIZE;
        for (int i = 0; i < ops; i++) {
            long sector = ((long) task * ops + i) * BIO_SECTORS;
            byte pattern = (byte) (task * 31 + i + 1);
            page.buffer().put(0, filled(bytes, pattern));
            ScenarioIo.transfer(dev, userSet, BioOp.WRITE, sector, page, bytes);
            probe.ioDone();
            page.zero(0, bytes);
            ScenarioIo.transfer(dev, userSet, BioOp.READ, sector, page, bytes);
            probe.ioDone();
            ScenarioIo.verify(page, 0, bytes, pattern, dev.name() + " sector " + sector);
        }
    }

    private static byte[] filled(int bytes, byte value) {
        byte[] b = new byte[bytes];
        java.util.Arrays.fill(b, value);
        return b;
    }
}

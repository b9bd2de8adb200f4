package io.blkstack.scenario;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.Submit;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * Seed 001, {@code dm-depth-first}: a mapped device {@code m} whose user bios span three targets,
 * the first a {@code snapshot-origin} of {@code y0}, with a snapshot {@code s} of {@code y0} whose
 * COW device is {@code m} itself (transient store). An origin write to a chunk without an
 * exception waits on the snapshot's pending exception until the copy service has copied the old
 * chunk to the COW device, and that copy's write re-enters {@code m} and needs one of
 * {@code m}'s clones: the dependency between targets the seed talks about. {@code m}'s clone
 * reserve is three, memory is exhausted, and two tasks write and read back at once.
 *
 * <p><b>Layout.</b> {@code m} starts with the COW area ({@code linear x0}, where the transient store
 * puts its chunks from sector 0), then one window per user write: {@code snapshot-origin y0} of
 * {@code 8(w+1)} sectors (a window always maps {@code y0} from sector 0, so window {@code w} ends
 * in chunk {@code w} of {@code y0}), then {@code linear x0} of 4 and of 2 sectors. Write {@code w}
 * covers the last 2 sectors of the window's origin target (a fresh chunk: one copy-out per write)
 * and both linear targets: three fragments from three targets. Reads are issued per target, so
 * every legacy finding is the write path's (a read spanning targets deadlocks the seed-000 way,
 * without the snapshot). At the end the snapshot is read and must still hold {@code y0}'s old
 * contents.
 *
 * <p><b>Legacy</b> ({@code dm-split=legacy}, and no bio-set rescuer: the old loop was only safe
 * because of the rescue the seed names, {@code dm_offload}): one call clones the origin fragment
 * (queued on the pending exception), clones the first linear fragment (queued, unsubmitted, on
 * the task's submit list) and waits for a third clone. Two tasks can hold all three clones; the
 * copy-out waits for a clone too, and nothing returns one. <b>Fixed</b> (front split, remainder
 * resubmitted): a task holds at most one clone that cannot return by itself (the one on the
 * pending exception), so with three in reserve and two tasks the copy always finds one. The
 * {@code fixed:front-only} row shows that the depth-first order alone is enough (the kernel later
 * removed {@code dm_offload}); {@code legacy+rescuer} shows that the rescue is what kept the old
 * loop alive.
 */
final class DmDepthFirstScenario implements Scenario {

    static final String MAPPED = "m";
    static final String SNAPSHOT = "s";
    static final String ORIGIN = "y0";
    static final String LOWER = "x0";
    static final int TASKS = 2;
    /** Clones in {@code m}'s reserve: one more than the tasks, so the fixed design always has one for the copy-out. */
    static final int CLONE_RESERVE = TASKS + 1;
    static final int CHUNK_SECTORS = 8;
    static final int ORIGIN_FRAGMENT_SECTORS = 2;
    static final int FIRST_LINEAR_SECTORS = 4;
    static final int SECOND_LINEAR_SECTORS = 2;
    static final int BIO_SECTORS = ORIGIN_FRAGMENT_SECTORS + FIRST_LINEAR_SECTORS + SECOND_LINEAR_SECTORS;
    static final long LATENCY_NANOS = 50_000;
    /** The old contents of chunk {@code w} of the origin are all {@code OLD_BASE + w}. */
    static final int OLD_BASE = 0x40;
    /** The hard shape: free slab clones left in {@code m}'s set and pages left in the arena (the seed shape: none). */
    static final int HARD_SPARE_BIOS = 1;
    static final int HARD_SPARE_PAGES = 0;

    private final boolean hard;

    /** The seed shape, or with {@code hard} the shape whose deadlock needs a specific interleaving. */
    DmDepthFirstScenario(boolean hard) {
        this.hard = hard;
    }

    @Override
    public String name() {
        return hard ? "dm-depth-first-hard" : "dm-depth-first";
    }

    @Override
    public String seed() {
        return "001";
    }

    @Override
    public String description() {
        if (hard) {
            return "as dm-depth-first with " + HARD_SPARE_BIOS + " free clone besides the 3-clone reserve";
        }
        return "a mapped device's bios span snapshot-origin and two linear targets; the snapshot's COW writes"
                + " re-enter it; 3-clone reserve, memory exhausted";
    }

    @Override
    public Policies legacyPolicies() {
        return Policies.defaults().with(PolicySwitch.DM_SPLIT, "legacy").with(PolicySwitch.BIOSET_RESCUER, "legacy");
    }

    @Override
    public List<Variant> fixedVariants() {
        return List.of(
                new Variant("fixed", Policies.defaults(), false, false, "front split, remainder resubmitted (and the rescuer)"),
                new Variant("fixed:front-only", Policies.defaults().with(PolicySwitch.BIOSET_RESCUER, "legacy"), false, false,
                        "front split without the bio-set rescuer: the depth-first order alone keeps the snapshot safe"),
                new Variant("legacy+rescuer", Policies.defaults().with(PolicySwitch.DM_SPLIT, "legacy"), false, false,
                        "the all-targets loop with the rescuer punting queued clones (the dm_offload era)"));
    }

    @Override
    public long memoryBytes() {
        return 512 * 1024;
    }

    @Override
    public String faults() {
        return "latency:" + LOWER + "=0.5/200us,latency:" + ORIGIN + "=0.5/200us";
    }

    @Override
    public String seedResource() {
        return "waits on mempool dm-" + MAPPED + "-bio";
    }

    @Override
    public Consumer<Kernel> workload(Engine engine, Probe probe) {
        int ops = engine == Engine.SIM ? 2 : 6;
        int spareBios = hard ? HARD_SPARE_BIOS : 0;
        int sparePages = hard ? HARD_SPARE_PAGES : 0;
        return kernel -> run(kernel, probe, ops, sparePages, spareBios);
    }

    /** Where user write {@code w} starts on {@code m}, for windows laid out as the class comment says. */
    static long writeSector(int windows, int w) {
        long sector = (long) CHUNK_SECTORS * windows; // the COW area
        for (int i = 0; i < w; i++) {
            sector += windowSectors(i);
        }
        return sector + (long) CHUNK_SECTORS * (w + 1) - ORIGIN_FRAGMENT_SECTORS;
    }

    private static long windowSectors(int w) {
        return (long) CHUNK_SECTORS * (w + 1) + FIRST_LINEAR_SECTORS + SECOND_LINEAR_SECTORS;
    }

    /** The table of {@code m}: the COW area, then per window the origin and two linear targets. */
    static String mappedTable(int windows) {
        StringBuilder sb = new StringBuilder();
        long cowSectors = (long) CHUNK_SECTORS * windows;
        sb.append("0 ").append(cowSectors).append(" linear ").append(LOWER).append(" 0\n");
        long begin = cowSectors;
        long lowerNext = cowSectors;
        for (int w = 0; w < windows; w++) {
            long originSectors = (long) CHUNK_SECTORS * (w + 1);
            sb.append(begin).append(' ').append(originSectors).append(" snapshot-origin ").append(ORIGIN).append('\n');
            begin += originSectors;
            sb.append(begin).append(' ').append(FIRST_LINEAR_SECTORS).append(" linear ").append(LOWER).append(' ')
                    .append(lowerNext).append('\n');
            begin += FIRST_LINEAR_SECTORS;
            sb.append(begin).append(' ').append(SECOND_LINEAR_SECTORS).append(" linear ").append(LOWER).append(' ')
                    .append(lowerNext + FIRST_LINEAR_SECTORS).append('\n');
            begin += SECOND_LINEAR_SECTORS;
            lowerNext += CHUNK_SECTORS;
        }
        return sb.toString();
    }

    /** Builds the stack, fills the origin's old contents, exhausts memory, runs the tasks, checks the snapshot. */
    private static void run(Kernel kernel, Probe probe, int ops, int sparePages, int spareBios) {
        int windows = TASKS * ops;
        MemoryDevice lower = new MemoryDevice(kernel, LOWER, 2L * CHUNK_SECTORS * windows * Bio.SECTOR_SIZE, LATENCY_NANOS);
        MemoryDevice origin = new MemoryDevice(kernel, ORIGIN, (long) CHUNK_SECTORS * windows * Bio.SECTOR_SIZE, LATENCY_NANOS);
        BioSet userSet = new BioSet(kernel, "user", TASKS, TASKS, null, false);
        List<Page> pages = new ArrayList<>();
        for (int t = 0; t < TASKS; t++) {
            pages.add(kernel.pages().alloc(Gfp.KERNEL));
        }
        fillOldContents(origin, userSet, pages.get(0), windows);
        Map<String, BlockDevice> devices = Map.of(LOWER, lower, ORIGIN, origin);
        MappedDevice m = new MappedDevice(kernel, MAPPED, table(kernel, MAPPED, mappedTable(windows), devices::get),
                CLONE_RESERVE);
        Map<String, BlockDevice> withM = Map.of(LOWER, lower, ORIGIN, origin, MAPPED, m);
        MappedDevice s = new MappedDevice(kernel, SNAPSHOT, table(kernel, SNAPSHOT, "0 " + CHUNK_SECTORS * windows
                + " snapshot " + ORIGIN + " " + MAPPED + " N " + CHUNK_SECTORS + "\n", withM::get));
        MemoryPressure pressure = MemoryPressure.exhaust(kernel, sparePages, spareBios, m.cloneSet());
        probe.watch("dm-" + MAPPED + " clone reserve", m.cloneSet().bioPool());
        probe.start(kernel);
        List<Task> workers = new ArrayList<>();
        for (int t = 0; t < TASKS; t++) {
            int task = t;
            workers.add(kernel.spawn("user" + t, TaskKind.USER,
                    () -> writeAndVerify(m, userSet, pages.get(task), task, ops, windows, probe)));
        }
        for (Task w : workers) {
            kernel.scheduler().join(w);
        }
        probe.stop();
        pressure.release();
        verifySnapshot(s, userSet, pages.get(0), windows);
        s.close();
        m.close();
        pages.forEach(kernel.pages()::free);
    }

    private static Table table(Kernel kernel, String name, String text, java.util.function.Function<String, BlockDevice> devices) {
        try {
            return Table.parse(kernel, name, text, devices);
        } catch (TableException e) {
            throw new IllegalStateException("scenario table of " + name + " does not parse: " + e.getMessage(), e);
        }
    }

    /** Writes chunk {@code w} of the origin full of {@code OLD_BASE + w}, before the snapshot exists. */
    private static void fillOldContents(MemoryDevice origin, BioSet set, Page page, int windows) {
        int bytes = CHUNK_SECTORS * Bio.SECTOR_SIZE;
        for (int w = 0; w < windows; w++) {
            page.buffer().put(0, filled(bytes, (byte) (OLD_BASE + w)));
            transfer(origin, set, BioOp.WRITE, (long) CHUNK_SECTORS * w, page, 0, bytes);
        }
    }

    /** One task: each write spans three targets; each is read back target by target and checked. */
    private static void writeAndVerify(MappedDevice m, BioSet set, Page page, int task, int ops, int windows, Probe probe) {
        int bytes = BIO_SECTORS * Bio.SECTOR_SIZE;
        for (int i = 0; i < ops; i++) {
            int w = task * ops + i;
            long sector = writeSector(windows, w);
            byte pattern = (byte) (task * 31 + i + 1);
            page.buffer().put(0, filled(bytes, pattern));
            transfer(m, set, BioOp.WRITE, sector, page, 0, bytes);
            probe.ioDone();
            page.zero(0, bytes);
            int done = 0;
            for (int fragment : new int[] {ORIGIN_FRAGMENT_SECTORS, FIRST_LINEAR_SECTORS, SECOND_LINEAR_SECTORS}) {
                transfer(m, set, BioOp.READ, sector + done, page, done * Bio.SECTOR_SIZE, fragment * Bio.SECTOR_SIZE);
                done += fragment;
            }
            probe.ioDone();
            ScenarioIo.verify(page, 0, bytes, pattern, m.name() + " sector " + sector);
        }
    }

    /** The snapshot must still show every origin chunk's old contents. */
    private static void verifySnapshot(MappedDevice s, BioSet set, Page page, int windows) {
        int bytes = CHUNK_SECTORS * Bio.SECTOR_SIZE;
        for (int w = 0; w < windows; w++) {
            page.zero(0, bytes);
            transfer(s, set, BioOp.READ, (long) CHUNK_SECTORS * w, page, 0, bytes);
            ScenarioIo.verify(page, 0, bytes, (byte) (OLD_BASE + w), "snapshot " + s.name() + " chunk " + w);
        }
    }

    /** Reads or writes {@code bytes} at {@code sector} from {@code offset} of {@code page}; throws on error. */
    private static void transfer(BlockDevice dev, BioSet set, BioOp op, long sector, Page page, int offset, int bytes) {
        Bio bio = set.alloc(Gfp.NOIO, 1);
        bio.init(dev, op, 0, sector);
        if (!bio.addPage(page, bytes, offset)) {
            throw new IllegalStateException("a one-page bio refused " + bytes + " bytes at offset " + offset + ": " + bio);
        }
        int err = Submit.submitAndWait(bio);
        bio.put();
        if (err != 0) {
            throw new IllegalStateException(op + " of " + bytes + " bytes at sector " + sector + " of " + dev.name()
                    + " failed: " + err);
        }
    }

    private static byte[] filled(int bytes, byte value) {
        byte[] b = new byte[bytes];
        Arrays.fill(b, value);
        return b;
    }
}

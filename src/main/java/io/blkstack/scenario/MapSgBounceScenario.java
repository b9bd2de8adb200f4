package io.blkstack.scenario;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.RequestMapper;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Mempool;
import io.blkstack.mem.Page;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * Seed 002, {@code map-sg-bounce}: two connections (tasks) each send large requests given as a
 * scatter list of three page segments that are not aligned for direct I/O; each request is mapped
 * onto three bios by a {@link RequestMapper} (the NBD server's pass-through path) over a memory
 * device, and each bio is bounced. The request bios come from the shared bio set {@code bounce}
 * with a reserve of six; bounce pages from the shared pool {@code bounce-pages}; memory exhausted.
 *
 * <p>Legacy ({@code map-sg=legacy}): all bios of a request are allocated, then each is bounced with
 * a second bio from the same set; if both connections hold three, both wait for a seventh. Fixed:
 * {@code private-pool} bounces from the mapper's own pools; {@code in-flight} has each bio in
 * flight before the next is allocated.
 */
final class MapSgBounceScenario implements Scenario {

    static final String LOWER = "mem0";
    static final String SHARED = "bounce";
    static final int SEGMENTS = 3;
    /** Each segment starts a sector into its page: misaligned for 4 KiB direct I/O. */
    static final int SEGMENT_OFFSET = Bio.SECTOR_SIZE;
    static final int SEGMENT_BYTES = Page.SIZE - Bio.SECTOR_SIZE;
    static final int ALIGNMENT = Page.SIZE;
    static final int TASKS = 2;
    static final int SHARED_RESERVE = TASKS * SEGMENTS;
    /** The hard shape: free slab bios left in the shared set and pages left in the arena (the seed shape: none). */
    static final int HARD_SPARE_BIOS = 5;
    static final int HARD_SPARE_PAGES = 5;

    private final boolean hard;

    /** The seed shape, or with {@code hard} the shape whose deadlock needs a specific interleaving. */
    MapSgBounceScenario(boolean hard) {
        this.hard = hard;
    }

    @Override
    public String name() {
        return hard ? "map-sg-bounce-hard" : "map-sg-bounce";
    }

    @Override
    public String seed() {
        return "002";
    }

    @Override
    public String description() {
        if (hard) {
            return "as map-sg-bounce with " + HARD_SPARE_BIOS + " free bios besides the shared reserve and "
                    + HARD_SPARE_PAGES + " free pages";
        }
        return "large requests mapped from a scatter list onto several bios, each bounced for direct-I/O alignment;"
                + " shared reserve of 6, memory exhausted";
    }

    @Override
    public Policies legacyPolicies() {
        return Policies.defaults().with(PolicySwitch.MAP_SG, "legacy");
    }

    @Override
    public List<Variant> fixedVariants() {
        return List.of(
                new Variant("fixed", Policies.defaults(), false, false, "map-sg=private-pool: bounce from the mapper's own pools"),
                new Variant("fixed:in-flight", Policies.defaults().with(PolicySwitch.MAP_SG, "in-flight"), false, false,
                        "map-sg=in-flight: each bio in flight before the next allocation"));
    }

    @Override
    public long memoryBytes() {
        return 512 * 1024;
    }

    @Override
    public String faults() {
        return "latency:" + LOWER + "=0.5/200us";
    }

    @Override
    public String seedResource() {
        return "waits on mempool " + SHARED + "-";
    }

    @Override
    public Consumer<Kernel> workload(Engine engine, Probe probe) {
        int requests = engine == Engine.SIM ? 2 : 40;
        int spareBios = hard ? HARD_SPARE_BIOS : 0;
        int sparePages = hard ? HARD_SPARE_PAGES : 0;
        return kernel -> run(kernel, probe, requests, sparePages, spareBios);
    }

    /** Builds the device, the shared pools and one mapper per task; exhausts memory; runs the tasks. */
    private static void run(Kernel kernel, Probe probe, int requests, int sparePages, int spareBios) {
        MemoryDevice dev = new MemoryDevice(kernel, LOWER, 1L << 20, 50_000);
        BioSet shared = new BioSet(kernel, SHARED, SHARED_RESERVE, SHARED_RESERVE, null, false);
        Mempool<Page> sharedPages = RequestMapper.pagePool(kernel, SHARED + "-pages", SHARED_RESERVE);
        List<RequestMapper> mappers = new ArrayList<>();
        List<Page[]> userPages = new ArrayList<>();
        for (int t = 0; t < TASKS; t++) {
            mappers.add(new RequestMapper(kernel, "conn" + t, shared, sharedPages, SEGMENTS, ALIGNMENT));
            Page[] pages = new Page[SEGMENTS];
            for (int i = 0; i < SEGMENTS; i++) {
                pages[i] = kernel.pages().alloc(Gfp.KERNEL);
            }
            userPages.add(pages);
        }
        MemoryPressure pressure = MemoryPressure.exhaust(kernel, sparePages, spareBios, shared);
        probe.watch(SHARED + " bio reserve", shared.bioPool());
        probe.watch(SHARED + " page reserve", sharedPages);
        probe.start(kernel);
        List<Task> workers = new ArrayList<>();
        for (int t = 0; t < TASKS; t++) {
            int task = t;
            workers.add(kernel.spawn("conn" + t, TaskKind.USER,
                    () -> requests(dev, mappers.get(task), userPages.get(task), task, requests, probe)));
        }
        for (Task w : workers) {
            kernel.scheduler().join(w);
        }
        probe.stop();
        pressure.release();
        for (Page[] pages : userPages) {
            for (Page p : pages) {
                kernel.pages().free(p);
            }
        }
    }

    /** One connection: writes each request, reads it back into cleared buffers and checks the bytes. */
    private static void requests(MemoryDevice dev, RequestMapper mapper, Page[] pages, int task, int requests, Probe probe) {
        RequestMapper.Segment[] sg = new RequestMapper.Segment[SEGMENTS];
        for (int i = 0; i < SEGMENTS; i++) {
            sg[i] = new RequestMapper.Segment(pages[i], SEGMENT_OFFSET, SEGMENT_BYTES);
        }
        long sectorsPerRequest = (long) SEGMENTS * SEGMENT_BYTES / Bio.SECTOR_SIZE;
        for (int r = 0; r < requests; r++) {
            long sector = ((long) task * requests + r) * sectorsPerRequest;
            byte pattern = (byte) (task * 37 + r + 1);
            for (Page p : pages) {
                p.buffer().put(SEGMENT_OFFSET, filled(SEGMENT_BYTES, pattern));
            }
            check(mapper.transfer(dev, BioOp.WRITE, sector, sg), "write", sector);
            probe.ioDone();
            for (Page p : pages) {
                p.zero(SEGMENT_OFFSET, SEGMENT_BYTES);
            }
            check(mapper.transfer(dev, BioOp.READ, sector, sg), "read", sector);
            probe.ioDone();
            for (Page p : pages) {
                ScenarioIo.verify(p, SEGMENT_OFFSET, SEGMENT_BYTES, pattern, dev.name() + " request at sector " + sector);
            }
        }
    }

    private static void check(BioStatus s, String what, long sector) {
        if (s != BioStatus.OK) {
            throw new IllegalStateException("mapped " + what + " at sector " + sector + " failed: " + s);
        }
    }

    private static byte[] filled(int bytes, byte value) {
        byte[] b = new byte[bytes];
        java.util.Arrays.fill(b, value);
        return b;
    }
}

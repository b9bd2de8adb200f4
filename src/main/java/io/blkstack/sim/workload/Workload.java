package io.blkstack.sim.workload;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import io.blkstack.sim.SimFaults;
import io.blkstack.sim.SimScheduler;
import io.blkstack.sim.nbd.SimNbdServer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * Runs a {@link WorkloadSpec} against the top device of a stack and checks every read against a
 * reference model: a read must return what was last written.
 *
 * <p>The check is exact under any interleaving because every task owns one slice of the region
 * and issues one operation at a time (submit, then wait for the completion): the model of a slice
 * changes only when its task's write completes, and nobody else writes there. Sectors never
 * written, or whose last write failed (a fault), are unknown and not compared. Each write fills its
 * pages with a pattern made of a per-write stamp and the byte's device offset, so data landing at
 * the wrong place is caught as well as corrupted data.
 *
 * <p>Bios come from the workload's own {@link BioSet} (one bio and one vec array in reserve per
 * task) and data pages are taken up front, before the optional pressure phase takes every free
 * page: from then on the stack underneath lives on its pool reserves. A mismatch is reported to
 * the simulated scheduler ({@link SimScheduler#reportDataMismatch}), which ends the run as
 * {@code DATA_MISMATCH}; under the real scheduler it is an {@link IllegalStateException}.
 *
 * <p>A stack whose construction fails after an injected I/O error ({@code io:<device>}) has
 * refused to start, which is the right answer (a pool that cannot read its superblock): the run
 * counts {@code workload.stack-refused} and ends without tasks, and still goes through the kernel's
 * leak checks. Without an injected I/O error a construction failure stays a crash. Building the
 * stack is marked as set-up ({@link SimFaults#setupBegins}): unless the run allows faults at set-up,
 * none fire there.
 *
 * <p><b>Every operation.</b> Besides reads, writes and flushes the mix may hold FUA writes,
 * discards and write-zeroes (with and without {@code NOUNMAP}, NBD's {@code NO_HOLE}). The model
 * takes a write-zeroes as zeros, a discard as "unknown" (what a discarded range reads is the
 * device's business). Sectors the top device maps to a {@code zero} target always read zeros;
 * sectors under an {@code error} target or a flakey target that drops or corrupts are never compared
 * ({@link DrivenStack#sectorClass}).
 *
 * <p><b>Control events</b> ({@link WorkloadSpec.Events}) need a {@link DrivenStack} that offers
 * them. Table reloads and thin snapshots run on a {@code ctl} task among the I/O tasks (each after
 * a seeded virtual delay), so a suspend meets bios in flight. A crash cuts the run into phases: at
 * the end of a phase every I/O task has finished its share of operations, the stack loses what was
 * never flushed and is built again from the media, the thin pools' metadata is checked, and every
 * task reads its whole slice back: a write whose completion was followed by a completed flush (or
 * that had FUA) must be there. Each task keeps a second model for that, of what is durable.
 *
 * <p><b>Lost unflushed writes.</b> On a stack whose bottom devices may lose acknowledged writes
 * they had not flushed (remote devices whose simulated server crashes), each task also keeps an
 * {@link UnflushedWindow}: once a loss happened, a read between a write and the next flush may
 * return an older value of what the task wrote; after a flush that succeeded (and no flush failed
 * meanwhile) the check is strict again, so a flush that hid a loss is caught by the next read.
 */
public final class Workload implements Consumer<Kernel> {

    /** Builds a stack's devices in a kernel and returns the top one. */
    @FunctionalInterface
    public interface StackBuilder {
        BlockDevice build(Kernel kernel);
    }

    /** Builds a stack in a kernel as the workload drives it: its devices and its control events. */
    @FunctionalInterface
    public interface DrivenStackBuilder {
        DrivenStack build(Kernel kernel);
    }

    /** The name of the workload's bio set. */
    public static final String BIO_SET = "workload";
    /** Flushes of the workload that failed, counted when the stack may lose unflushed writes. */
    static final String FLUSH_FAILURES = "workload.flush-failures";
    /** The first thin device id the snapshot events use (far above the ids a configuration names). */
    public static final long SNAPSHOT_ID_BASE = 1L << 20;
    /** The longest seeded delay before a control event. */
    static final long EVENT_DELAY_NANOS_MAX = 2_000_000;

    private final DrivenStackBuilder stack;
    private final WorkloadSpec spec;

    /** A workload of {@code spec} against the top device {@code stack} builds (no control events). */
    public Workload(StackBuilder stack, WorkloadSpec spec) {
        this(spec, k -> DrivenStack.of(stack.build(k)));
    }

    private Workload(WorkloadSpec spec, DrivenStackBuilder stack) {
        this.stack = stack;
        this.spec = spec;
    }

    /** A workload of {@code spec} against the devices of the stack {@code stack} builds, with its control events. */
    public static Workload driving(DrivenStackBuilder stack, WorkloadSpec spec) {
        return new Workload(spec, stack);
    }

    /** Builds the stack, takes pages, applies pressure, runs the phases, waits for them and gives memory back. */
    @Override
    public void accept(Kernel kernel) {
        DrivenStack driven;
        SimFaults.setupBegins(kernel);
        try {
            driven = stack.build(kernel);
        } catch (RuntimeException e) {
            if (!ioFaultFired(kernel)) {
                throw e;
            }
            // An injected I/O error made a target's constructor fail (a pool that cannot read its
            // superblock, a snapshot that cannot write its header): refusing to start is the right
            // answer, not a crash. The run still ends with the kernel's close, so whatever the
            // half-built stack failed to give back is reported as a leak.
            kernel.counters().get("workload.stack-refused").incrementAndGet();
            kernel.tracer().event(Task.currentOrNull(), "stack-refused", String.valueOf(e.getMessage()));
            return;
        } finally {
            SimFaults.setupEnds(kernel);
        }
        checkStack(driven);
        BioSet bioSet = new BioSet(kernel, BIO_SET, spec.tasks(), spec.tasks(), null, false);
        List<List<Page>> pages = new ArrayList<>();
        List<Page> hoard = new ArrayList<>();
        try {
            for (int t = 0; t < spec.tasks(); t++) {
                List<Page> own = new ArrayList<>();
                for (int i = 0; i < spec.pagesPerTask(); i++) {
                    own.add(kernel.pages().alloc(Gfp.KERNEL));
                }
                pages.add(own);
            }
            if (spec.pressure()) {
                exhaust(kernel, hoard, spec.sparePages());
            }
            List<TaskRun> runs = new ArrayList<>();
            for (int t = 0; t < spec.tasks(); t++) {
                runs.add(new TaskRun(kernel, driven, bioSet, pages.get(t), t, randomSeed(kernel, t)));
            }
            runPhases(kernel, driven, runs, hoard);
        } finally {
            hoard.forEach(kernel.pages()::free);
            pages.forEach(list -> list.forEach(kernel.pages()::free));
        }
    }

    /** The region must fit every device, and the events need a stack that offers them. */
    private void checkStack(DrivenStack driven) {
        List<BlockDevice> devices = driven.devices();
        if (devices.isEmpty() || devices.size() > spec.tasks()) {
            throw new IllegalArgumentException("workload: " + devices.size() + " devices to drive with " + spec.tasks()
                    + " tasks (each device needs at least one task)");
        }
        for (BlockDevice top : devices) {
            if (spec.regionEndBytes() > top.capacityBytes()) {
                throw new IllegalArgumentException("workload region " + spec.regionStartBytes() + "-"
                        + spec.regionEndBytes() + " ends past device " + top.name() + " of " + top.capacityBytes()
                        + " bytes");
            }
        }
        WorkloadSpec.Events events = spec.events();
        if (events.reloads() > 0 && driven.reloadCandidates() == 0) {
            throw new IllegalArgumentException("workload: reload events need a stack with mapped devices");
        }
        if (events.snapshots() > 0 && thinIndexes(driven).isEmpty()) {
            throw new IllegalArgumentException("workload: snap events need a thin device among the driven devices");
        }
        if (events.crashes() > 0 && !driven.canRestart()) {
            throw new IllegalArgumentException("workload: crash events need a stack that can restart (a --config stack)");
        }
    }

    private static List<Integer> thinIndexes(DrivenStack driven) {
        List<Integer> thin = new ArrayList<>();
        for (int i = 0; i < driven.devices().size(); i++) {
            if (driven.isThin(i)) {
                thin.add(i);
            }
        }
        return thin;
    }

    /**
     * Runs the operations in {@code crashes + 1} phases. In each, the I/O tasks run their share of
     * operations while a {@code ctl} task runs the reloads and snapshots drawn for the phase; between
     * phases the stack crashes and restarts, and every task reads its slice back.
     */
    private void runPhases(Kernel kernel, DrivenStack driven, List<TaskRun> runs, List<Page> hoard) {
        WorkloadSpec.Events events = spec.events();
        int phases = events.crashes() + 1;
        // Drawn only when there are events, so that runs without them replay as they always did.
        SplittableRandom plan = new SplittableRandom(events.isEmpty() ? 0 : randomSeed(kernel, spec.tasks()));
        List<List<Character>> phaseEvents = new ArrayList<>();
        for (int p = 0; p < phases; p++) {
            phaseEvents.add(new ArrayList<>());
        }
        for (int i = 0; i < events.reloads(); i++) {
            phaseEvents.get(plan.nextInt(phases)).add('r');
        }
        for (int i = 0; i < events.snapshots(); i++) {
            phaseEvents.get(plan.nextInt(phases)).add('s');
        }
        long[] nextSnapId = {SNAPSHOT_ID_BASE};
        for (int p = 0; p < phases; p++) {
            int from = (int) ((long) spec.opsPerTask() * p / phases);
            int to = (int) ((long) spec.opsPerTask() * (p + 1) / phases);
            List<Task> tasks = new ArrayList<>();
            for (TaskRun run : runs) {
                tasks.add(kernel.spawn("io" + run.index + (p == 0 ? "" : "." + p), TaskKind.USER, () -> run.run(from, to)));
            }
            List<Character> mine = phaseEvents.get(p);
            if (!mine.isEmpty()) {
                SplittableRandom ctlRandom = plan.split();
                tasks.add(kernel.spawn("ctl" + (p == 0 ? "" : "." + p), TaskKind.USER,
                        () -> controlEvents(kernel, driven, mine, ctlRandom, nextSnapId, hoard)));
            }
            for (Task t : tasks) {
                kernel.scheduler().join(t);
            }
            if (p + 1 < phases && !restart(kernel, driven, runs, hoard)) {
                return;
            }
        }
    }

    /**
     * The {@code ctl} task: each event after a seeded delay; a failure caused by an injected I/O
     * error is counted. The pressure's hoard is given back for the length of each event and taken
     * again after it: loading a table builds targets, which is control-path work that needs memory
     * (as {@code dmsetup reload} runs in a process that has some), and the hoard is the
     * workload's own device for starving the data path, not memory that would ever come back.
     */
    private void controlEvents(Kernel kernel, DrivenStack driven, List<Character> events, SplittableRandom random,
            long[] nextSnapId, List<Page> hoard) {
        List<Integer> thin = thinIndexes(driven);
        for (char e : events) {
            Task.current().sleepFor(random.nextLong(EVENT_DELAY_NANOS_MAX));
            hoard.forEach(kernel.pages()::free);
            hoard.clear();
            try {
                if (e == 'r') {
                    String name = driven.reload(random.nextInt(driven.reloadCandidates()));
                    kernel.counters().get("workload.reloads").incrementAndGet();
                    kernel.tracer().event(Task.current(), "reload", name);
                } else {
                    int index = thin.get(random.nextInt(thin.size()));
                    long id = nextSnapId[0]++;
                    driven.thinMessage(index, "create_snap", Long.toString(id), Long.toString(driven.thinId(index)));
                    kernel.tracer().event(Task.current(), "thin-message", "create_snap " + id);
                    Task.current().sleepFor(random.nextLong(EVENT_DELAY_NANOS_MAX));
                    driven.thinMessage(index, "delete", Long.toString(id));
                    kernel.tracer().event(Task.current(), "thin-message", "delete " + id);
                    kernel.counters().get("workload.thin-snapshots").incrementAndGet();
                }
            } catch (RuntimeException ex) {
                if (!ioFaultFired(kernel)) {
                    throw ex;
                }
                kernel.counters().get("workload.events-failed").incrementAndGet();
                kernel.tracer().event(Task.current(), "event-failed", String.valueOf(ex.getMessage()));
            } finally {
                if (spec.pressure()) {
                    exhaust(kernel, hoard, spec.sparePages());
                }
            }
        }
    }

    /**
     * Crashes and restarts the stack with the arena's pages given back (building a stack needs
     * memory), checks the reopened metadata, and has every task read its slice back against what
     * it made durable; false if that found a problem (already reported).
     */
    private boolean restart(Kernel kernel, DrivenStack driven, List<TaskRun> runs, List<Page> hoard) {
        for (TaskRun run : runs) {
            if (run.failed) {
                return false;
            }
        }
        hoard.forEach(kernel.pages()::free);
        hoard.clear();
        List<String> problems = new ArrayList<>();
        for (String p : driven.crashAndRestart()) {
            if (p.endsWith(DrivenStack.LEAK_SUFFIX)) {
                // A block allocated in a transaction that committed before its mapping was inserted:
                // what a crash leaves in dm-thin too (thin_check calls leaks non-fatal). Counted.
                kernel.counters().get("workload.restart-leaked-blocks").incrementAndGet();
                kernel.tracer().event(Task.current(), "restart-leak", p);
            } else {
                problems.add(p);
            }
        }
        kernel.counters().get("workload.restarts").incrementAndGet();
        kernel.tracer().event(Task.current(), "restart", problems.isEmpty() ? "clean" : problems.toString());
        if (!problems.isEmpty()) {
            report(kernel, "after a crash and restart the reopened metadata fails its check: " + String.join("; ", problems));
            return false;
        }
        if (spec.pressure()) {
            exhaust(kernel, hoard, spec.sparePages());
        }
        List<Task> tasks = new ArrayList<>();
        for (TaskRun run : runs) {
            run.crashed();
            tasks.add(kernel.spawn("verify" + run.index, TaskKind.USER, run::verifySlice));
        }
        for (Task t : tasks) {
            kernel.scheduler().join(t);
        }
        for (TaskRun run : runs) {
            if (run.failed) {
                return false;
            }
        }
        return true;
    }

    /** Whether an injected I/O error ({@code io:<device>}, or a simulated NBD server's fault) fired in this run so far. */
    static boolean ioFaultFired(Kernel kernel) {
        if (!(kernel.faults() instanceof SimFaults faults)) {
            return false;
        }
        for (Map.Entry<String, Long> e : faults.fires().entrySet()) {
            if (isIoFault(e.getKey()) && e.getValue() > 0) {
                return true;
            }
        }
        return false;
    }

    /** Whether a simulated NBD server has crashed and lost unflushed writes in this run so far. */
    static boolean lossHappened(Kernel kernel) {
        if (!(kernel.faults() instanceof SimFaults faults)) {
            return false;
        }
        for (Map.Entry<String, Long> e : faults.fires().entrySet()) {
            if (e.getKey().startsWith(SimNbdServer.LOSE_SITE) && e.getValue() > 0) {
                return true;
            }
        }
        return false;
    }

    /** An I/O fault site: a device's {@code io:} error, or a simulated NBD server's drop, refusal or delay. */
    private static boolean isIoFault(String site) {
        return site.startsWith("io:") || site.startsWith(SimNbdServer.DROP_SITE) || site.startsWith(SimNbdServer.REFUSE_SITE)
                || site.startsWith(SimNbdServer.DELAY_SITE);
    }

    /** A task's seed: drawn from the run's stream when simulated (so seeds vary the operations), fixed otherwise. */
    static long randomSeed(Kernel kernel, int taskIndex) {
        if (kernel.scheduler() instanceof SimScheduler sim) {
            return sim.random().nextLong();
        }
        return 0x5eed_0000L + taskIndex;
    }

    /** Takes every free page but {@code sparePages} without waiting. */
    static void exhaust(Kernel kernel, List<Page> hoard, int sparePages) {
        int pagesMax = kernel.pages().totalPages();
        while (kernel.pages().freePages() > sparePages) {
            Page p = kernel.pages().alloc(Gfp.NOWAIT);
            if (p == null) {
                break;
            }
            hoard.add(p);
            if (hoard.size() > pagesMax) {
                throw new IllegalStateException("took " + hoard.size() + " pages from an arena of " + pagesMax);
            }
        }
    }

    /** Reports a finding of the data check: to the simulated scheduler, else as an exception. */
    static void report(Kernel kernel, String what) {
        if (kernel.scheduler() instanceof SimScheduler sim) {
            sim.reportDataMismatch(Task.current(), what);
        } else {
            throw new IllegalStateException(what);
        }
    }

    /** The operations of the mix, in the order their shares are drawn. */
    private enum Op {
        WRITE, READ, FLUSH, FUA, DISCARD, ZEROES, ZEROES_NOHOLE
    }

    /** One task: its device, slice, pages, random stream, and its models of what reads return now and after a crash. */
    private final class TaskRun {
        private final Kernel kernel;
        private final DrivenStack driven;
        private final int deviceIndex;
        private final BioSet bioSet;
        private final List<Page> pages;
        private final int index;
        private final SplittableRandom random;
        private final SliceModel slice;
        private final long sliceStart;
        private final boolean[] known;
        /** The stamps of {@link SliceModel#stamps} that a crash keeps, where {@link #durableKnown}; null without crashes. */
        private final long[] durable;
        private final boolean[] durableKnown;
        private final int[] shares;
        /** Writes since the last good flush, when the stack may lose unflushed writes; else null. */
        private final UnflushedWindow window;
        /** One sector read back from a page, to compare with the model. */
        private final byte[] sector = new byte[Bio.SECTOR_SIZE];
        private BlockDevice dev;
        private int dataOps;
        private volatile boolean failed;

        TaskRun(Kernel kernel, DrivenStack driven, BioSet bioSet, List<Page> pages, int index, long seed) {
            this.kernel = kernel;
            this.driven = driven;
            this.deviceIndex = index % driven.devices().size();
            this.dev = driven.devices().get(deviceIndex);
            this.bioSet = bioSet;
            this.pages = pages;
            this.index = index;
            this.random = new SplittableRandom(seed);
            this.slice = new SliceModel(spec, index, random);
            this.sliceStart = slice.start;
            this.known = slice.known;
            boolean crashes = spec.events().crashes() > 0;
            this.durable = crashes ? new long[slice.stamps.length] : null;
            this.durableKnown = crashes ? new boolean[known.length] : null;
            this.window = driven.mayLoseUnflushed() ? new UnflushedWindow(slice, spec.opsPerTask()) : null;
            this.shares = new int[] {spec.writePercent(), spec.readPercent(), spec.flushPercent(), spec.fuaPercent(),
                spec.discardPercent(), spec.zeroesPercent(), spec.zeroesNoHolePercent()};
        }

        /** Draws an operation by the mix's shares; a read-only device reads instead of changing data. */
        private Op draw() {
            int d = random.nextInt(100);
            Op op = Op.FLUSH;
            for (int i = 0, sum = 0; i < shares.length; i++) {
                sum += shares[i];
                if (d < sum) {
                    op = Op.values()[i];
                    break;
                }
            }
            boolean changesData = op != Op.READ && op != Op.FLUSH;
            return changesData && driven.readOnly(deviceIndex) ? Op.READ : op;
        }

        /** Issues operations {@code from} (inclusive) to {@code to} one at a time; stops at the first mismatch. */
        void run(int from, int to) {
            for (int op = from; op < to && !failed; op++) {
                Op kind = draw();
                switch (kind) {
                    case FLUSH -> {
                        flush();
                        continue;
                    }
                    case READ -> read(op);
                    case WRITE, FUA -> write(kind == Op.FUA);
                    case DISCARD, ZEROES, ZEROES_NOHOLE -> noDataRange(kind);
                }
                if (failed) {
                    return;
                }
                dataOps++;
                if (spec.flushEvery() > 0 && dataOps % spec.flushEvery() == 0) {
                    flush();
                }
            }
        }

        /** A bio over the task's pages for {@code size} bytes at slice offset {@code offset}. */
        private Bio dataBio(BioOp op, int flags, long offset, int size) {
            int n = (size + Page.SIZE - 1) / Page.SIZE;
            Bio bio = bioSet.alloc(Gfp.NOIO, n);
            bio.init(dev, op, flags, (sliceStart + offset) >>> Bio.SECTOR_SHIFT);
            for (int i = 0; i < n; i++) {
                int len = Math.min(Page.SIZE, size - i * Page.SIZE);
                if (!bio.addPage(pages.get(i), len, 0)) {
                    throw new IllegalStateException("bio of " + n + " vecs refused page " + i + ": " + bio);
                }
            }
            return bio;
        }

        /**
         * Writes a fresh pattern; on success the model takes it (and, with FUA, the durable model
         * too), on failure the range becomes unknown. Until a flush completes after it, a plain
         * write leaves the durable state of its range unknown (old or new data may survive a crash).
         */
        private void write(boolean fua) {
            long[] r = slice.pickRange();
            long offset = r[0];
            int size = (int) r[1];
            long stamp = random.nextLong();
            // The model takes the pattern now; "known" (set after the completion) decides whether it counts.
            slice.stamp(stamp, offset, size);
            for (int pos = 0; pos < size; pos += Page.SIZE) {
                slice.fill(pages.get(pos / Page.SIZE).buffer(), 0, offset + pos, Math.min(Page.SIZE, size - pos));
            }
            Bio bio = dataBio(BioOp.WRITE, fua ? BioFlags.FUA : 0, offset, size);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            bio.put();
            boolean ok = status == BioStatus.OK;
            if (fua) {
                kernel.counters().get("workload.fua-writes").incrementAndGet();
            }
            slice.setKnown(offset, size, ok);
            if (window != null) {
                window.record(stamp, offset, size);
            }
            int first = (int) (offset / Bio.SECTOR_SIZE);
            if (durable != null) {
                boolean nowDurable = ok && fua;
                if (nowDurable) {
                    System.arraycopy(slice.stamps, first, durable, first, size / Bio.SECTOR_SIZE);
                }
                Arrays.fill(durableKnown, first, first + size / Bio.SECTOR_SIZE, nowDurable);
            }
        }

        /** A discard (the range becomes unknown) or a write-zeroes (zeros on success, else unknown). */
        private void noDataRange(Op kind) {
            long[] r = slice.pickRange();
            long offset = r[0];
            int size = (int) r[1];
            BioOp op = kind == Op.DISCARD ? BioOp.DISCARD : BioOp.WRITE_ZEROES;
            Bio bio = bioSet.alloc(Gfp.NOIO, 0);
            bio.init(dev, op, kind == Op.ZEROES_NOHOLE ? BioFlags.NOUNMAP : 0, (sliceStart + offset) >>> Bio.SECTOR_SHIFT);
            bio.setSizeBytes(size);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            bio.put();
            kernel.counters().get(kind == Op.DISCARD ? "workload.discards" : "workload.write-zeroes").incrementAndGet();
            boolean zeros = op == BioOp.WRITE_ZEROES && status == BioStatus.OK;
            int first = (int) (offset / Bio.SECTOR_SIZE);
            int sectors = size / Bio.SECTOR_SIZE;
            if (zeros) {
                slice.stamp(SliceModel.ZEROS, offset, size);
            }
            Arrays.fill(known, first, first + sectors, zeros);
            if (window != null) {
                window.record(SliceModel.ZEROS, offset, size);
            }
            if (durableKnown != null) {
                Arrays.fill(durableKnown, first, first + sectors, false);
            }
        }

        /** Reads a range and compares every known sector with the model. */
        private void read(int op) {
            long[] r = slice.pickRange();
            readAndCompare(op, r[0], (int) r[1], "");
        }

        /** Reads {@code size} bytes at slice offset {@code offset} and compares them; false after a mismatch. */
        private boolean readAndCompare(int op, long offset, int size, String when) {
            for (int i = 0; i * Page.SIZE < size; i++) {
                pages.get(i).zero(0, Page.SIZE);
            }
            Bio bio = dataBio(BioOp.READ, 0, offset, size);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            bio.put();
            if (status != BioStatus.OK) {
                return true; // an injected I/O error: nothing to compare
            }
            // A sector at a time (offset and size are whole sectors, so a sector never spans pages).
            for (int pos = 0; pos < size; pos += Bio.SECTOR_SIZE) {
                int at = (int) (offset + pos);
                DrivenStack.SectorClass c = driven.sectorClass(deviceIndex, (sliceStart + at) >>> Bio.SECTOR_SHIFT);
                boolean zero = c == DrivenStack.SectorClass.ZERO;
                if (!zero && (c == DrivenStack.SectorClass.UNCHECKED || !known[at / Bio.SECTOR_SIZE])) {
                    continue;
                }
                pages.get(pos / Page.SIZE).buffer().get(pos % Page.SIZE, sector, 0, Bio.SECTOR_SIZE);
                int differs = zero ? slice.mismatch(sector, SliceModel.ZEROS, at) : slice.mismatch(sector, at);
                if (differs >= 0 && !zero && window != null && lossHappened(kernel) && window.accepts(sector, at)) {
                    // Acknowledged, not yet flushed, and a server lost unflushed writes: the next flush
                    // must fail (else the strict reads after it catch the loss).
                    kernel.counters().get("workload.unflushed-lost-reads").incrementAndGet();
                    continue;
                }
                if (differs >= 0) {
                    mismatch(op, sliceStart + at + differs, zero ? 0 : slice.expectedByte(at + differs), sector[differs], size,
                            when);
                    return false;
                }
            }
            return true;
        }

        /** Flushes the device and waits; on success everything this task wrote is durable. */
        private void flush() {
            Bio bio = bioSet.alloc(Gfp.NOIO, 0);
            bio.init(dev, BioOp.FLUSH, 0, 0);
            BioStatus status = Submit.submitAndWaitStatus(bio);
            bio.put();
            if (status == BioStatus.OK && durable != null) {
                System.arraycopy(slice.stamps, 0, durable, 0, durable.length);
                System.arraycopy(known, 0, durableKnown, 0, known.length);
            }
            if (window != null) {
                AtomicLong failures = kernel.counters().get(FLUSH_FAILURES);
                long now = status == BioStatus.OK ? failures.get() : failures.incrementAndGet();
                window.flushed(status == BioStatus.OK, now);
            }
        }



        /** After a crash: the device is the restarted one, and what reads return is what was durable. */
        void crashed() {
            dev = driven.devices().get(deviceIndex);
            System.arraycopy(durable, 0, slice.stamps, 0, durable.length);
            System.arraycopy(durableKnown, 0, known, 0, known.length);
            if (window != null) {
                window.restart(kernel.counters().get(FLUSH_FAILURES).get());
            }
        }

        /** Reads the whole slice back after a restart, in pieces of the largest operation. */
        void verifySlice() {
            int piece = spec.sizeMaxBytes();
            for (long offset = 0; offset < slice.length; offset += piece) {
                int size = (int) Math.min(piece, slice.length - offset);
                if (!readAndCompare(-1, offset, size, "after a crash and restart, ")) {
                    return;
                }
            }
        }

        /** Reports a read that disagrees with the model. */
        private void mismatch(int op, long deviceOffset, byte want, byte got, int size, String when) {
            failed = true;
            String what = String.format("data mismatch on %s: %s%s of task io%d read %d bytes; byte at device"
                    + " offset %d (sector %d) is 0x%02x, the last %swrite there put 0x%02x", dev.name(), when,
                    op < 0 ? "the read-back" : "operation " + op, index, size, deviceOffset, deviceOffset >>> Bio.SECTOR_SHIFT,
                    got & 0xff, when.isEmpty() ? "" : "durable ", want & 0xff);
            report(kernel, what);
        }
    }
}

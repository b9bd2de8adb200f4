package io.blkstack.dm.simple;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioList;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioState;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import io.blkstack.wq.DelayedWork;
import io.blkstack.wq.Workqueue;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code delay <dev> <offset> <delay ms> [<write dev> <write offset> <write delay ms> [<flush dev>
 * <flush offset> <flush delay ms>]]} (dm-delay): holds reads, writes and flushes back for a fixed
 * time each and maps each class to its own device and offset.
 *
 * <p>The 3-argument form applies one device, offset and delay to every class; the 6-argument form
 * gives writes and flushes their own; the 9-argument form gives flushes their own as well. A class
 * with delay 0 is remapped at once.
 *
 * <p><b>Holding.</b> {@link #map} never blocks: it remaps the clone, stamps its expiry (kernel
 * clock) in the clone's per-bio data and appends it to its class's intrusive {@link BioList}
 * (no allocation; within one class expiries grow with arrival order, so each list is sorted). A
 * {@link DelayedWork} on this target's {@code MEM_RECLAIM} workqueue is armed for the earliest
 * head; when it runs it submits every expired clone in expiry order and re-arms for the next one.
 * The rescuer of the queue guarantees held clones move even when no worker can be created, so the
 * bios (and the clone reserve of the mapped device they came from) always come back (rules 1 and
 * 5 of DESIGN.md section 1). The lists are bounded by {@link #HELD_MAX}; a clone that would exceed
 * it goes down at once (counted), so holding never grows without bound.
 *
 * <p><b>Suspend.</b> {@link #presuspend} stops delaying and releases every held clone, so the
 * mapped device's wait for in-flight I/O ends; {@link #resume} delays again.
 */
public final class DelayTarget extends Target {

    /** The table type name. */
    public static final String TYPE = "delay";
    /** Clones held at most at once; beyond that clones are not delayed. */
    public static final int HELD_MAX = 4096;
    /** Largest delay accepted, in milliseconds (the kernel's unsigned int). */
    public static final long DELAY_MS_MAX = 0xffff_ffffL;

    /** One class of I/O (reads, writes or flushes): where it goes, how long it waits, what is held. */
    private static final class DelayClass {
        final String name;
        final BlockDevice device;
        final String deviceName;
        final long offsetSectors;
        final long delayMs;
        final BioList held = new BioList(); // guarded by the target's lock
        /** Names this class's list as the holder of the clones on it, for the checker and the watchdog. */
        final Object holder;

        DelayClass(String name, BlockDevice device, String deviceName, long offsetSectors, long delayMs) {
            this.name = name;
            this.device = device;
            this.deviceName = deviceName;
            this.offsetSectors = offsetSectors;
            this.delayMs = delayMs;
            this.holder = new Object() {
                @Override
                public String toString() {
                    return "the " + DelayClass.this.name + " list of a delay target over " + deviceName + " ("
                            + DelayClass.this.delayMs + " ms each)";
                }
            };
        }

        /** The class's table arguments. */
        String table() {
            return deviceName + " " + offsetSectors + " " + delayMs;
        }
    }

    /** Per-bio data: when the held clone may go. */
    private static final class DelayInfo {
        long expiresNanos;
    }

    private final Kernel kernel;
    private final int argc;
    private final DelayClass read;
    private final DelayClass write;
    private final DelayClass flush;
    private final DelayClass[] classes;
    private final SpinLock lock;
    private final BioList releasing = new BioList(); // used only by the work function
    private Workqueue workqueue;
    private DelayedWork flushWork;

    // Guarded by lock.
    private boolean mayDelay = true;
    private long armedDeadlineNanos = Long.MAX_VALUE;
    private int heldTotal;

    /** Parses the 3-, 6- or 9-argument form; every range must lie inside its device. */
    public DelayTarget(TargetArgs args) throws TableException {
        super(args);
        this.kernel = args.kernel();
        this.argc = args.count();
        if (argc != 3 && argc != 6 && argc != 9) {
            throw args.error(argc + " argument(s), expected 3, 6 or 9: <dev> <offset> <delay ms>"
                    + " [<write dev> <write offset> <write delay ms> [<flush dev> <flush offset> <flush delay ms>]]");
        }
        this.read = parseClass(args, "read", 1);
        this.write = argc >= 6 ? parseClass(args, "write", 4) : parseClass(args, "write", 1);
        this.flush = argc == 9 ? parseClass(args, "flush", 7) : parseClass(args, "flush", argc >= 6 ? 4 : 1);
        this.classes = new DelayClass[] {read, write, flush};
        this.lock = new SpinLock("delay " + args.mappedDeviceName() + "@" + args.begin());
        String name = "kdelayd/" + args.mappedDeviceName() + "@" + args.begin();
        this.flushWork = new DelayedWork(name + " flush", this::flushExpired);
        // Last, so a failed parse leaves nothing to tear down.
        this.workqueue = Workqueue.create(kernel, name, Workqueue.MEM_RECLAIM, 1);
    }

    /** Parses one {@code <dev> <offset> <delay>} triple starting at argument {@code first}. */
    private static DelayClass parseClass(TargetArgs args, String name, int first) throws TableException {
        BlockDevice dev = args.device(first);
        long offset = args.sector(first + 1);
        args.requireArea(first + 1, dev, offset, args.length());
        long delayMs = args.unsigned(first + 2, "is not a delay in milliseconds");
        if (delayMs > DELAY_MS_MAX) {
            throw args.error(first + 2, "delay must be at most " + DELAY_MS_MAX + " ms");
        }
        return new DelayClass(name, dev, args.word(first), offset, delayMs);
    }

    /** The class a clone belongs to: flushes (and PREFLUSH), other writes, reads. */
    private DelayClass classOf(Bio clone) {
        if (clone.op() == BioOp.FLUSH || clone.hasFlag(BioFlags.PREFLUSH)) {
            return flush;
        }
        return clone.op().isWrite() ? write : read;
    }

    /** Remaps the clone to its class's device; holds it if the class has a delay. */
    @Override
    public MapResult map(Bio clone, TargetIo io) {
        DelayClass c = classOf(clone);
        long sector = clone.sizeBytes() > 0 ? c.offsetSectors + targetOffset(clone) : 0;
        clone.setDevice(c.device).setSector(sector);
        if (c.delayMs == 0) {
            return MapResult.REMAPPED;
        }
        DelayInfo info = io.perBioData();
        long now = kernel.scheduler().nanoTime();
        info.expiresNanos = now + c.delayMs * 1_000_000L;
        lock.lock();
        try {
            if (!mayDelay || heldTotal >= HELD_MAX) {
                return MapResult.REMAPPED;
            }
            clone.setState(BioState.QUEUED, c.holder);
            c.held.add(clone);
            heldTotal++;
            armLocked(info.expiresNanos, now);
        } finally {
            lock.unlock();
        }
        return MapResult.SUBMITTED;
    }

    /**
     * Arms the flush work for {@code deadline} if nothing earlier is armed (the kernel's
     * {@code mod_timer} to the earliest expiry). Never blocks: disarming and queueing only take the
     * worker pool's lock, which never calls back into this target.
     */
    private void armLocked(long deadlineNanos, long nowNanos) {
        if (deadlineNanos >= armedDeadlineNanos) {
            return;
        }
        armedDeadlineNanos = deadlineNanos;
        flushWork.cancelTimer();
        // If the item is already queued to run now, queueing fails; that run re-arms for what is left.
        workqueue.queueDelayed(flushWork, Math.max(0, deadlineNanos - nowNanos));
    }

    /** The work function: submits every clone whose time has come, earliest first, then re-arms. */
    private void flushExpired() {
        long now = kernel.scheduler().nanoTime();
        lock.lock();
        try {
            armedDeadlineNanos = Long.MAX_VALUE;
            boolean all = !mayDelay;
            while (true) {
                DelayClass next = null;
                long best = Long.MAX_VALUE;
                for (DelayClass c : classes) {
                    Bio head = c.held.peek();
                    if (head != null && expiresOf(head) < best) {
                        best = expiresOf(head);
                        next = c;
                    }
                }
                if (next == null) {
                    break;
                }
                if (!all && best > now) {
                    armLocked(best, now);
                    break;
                }
                releasing.add(next.held.pop());
                heldTotal--;
            }
        } finally {
            lock.unlock();
        }
        for (Bio b = releasing.pop(); b != null; b = releasing.pop()) {
            Submit.submitBio(b);
        }
    }

    private static long expiresOf(Bio clone) {
        TargetIo tio = clone.frontPad();
        DelayInfo info = tio.perBioData();
        return info.expiresNanos;
    }

    @Override
    protected Object newPerBioData() {
        return new DelayInfo();
    }

    /** Stops delaying and sends every held clone down now, waiting until they are submitted. */
    @Override
    public void presuspend() {
        lock.lock();
        mayDelay = false;
        boolean any = heldTotal > 0;
        lock.unlock();
        if (any) {
            flushWork.cancelTimer();
            workqueue.queue(flushWork);
            flushWork.flush();
        }
    }

    /** Delays again. */
    @Override
    public void resume() {
        lock.lock();
        mayDelay = true;
        lock.unlock();
    }

    /** Held clones per class: {@code <reads> <writes> <flushes>} (dm-delay's INFO status). */
    @Override
    public String statusInfo() {
        lock.lock();
        try {
            return read.held.size() + " " + write.held.size() + " " + flush.held.size();
        } finally {
            lock.unlock();
        }
    }

    /** The 3, 6 or 9 arguments as loaded. */
    @Override
    public String statusTable() {
        StringBuilder sb = new StringBuilder(read.table());
        if (argc >= 6) {
            sb.append(' ').append(write.table());
        }
        if (argc == 9) {
            sb.append(' ').append(flush.table());
        }
        return sb.toString();
    }

    @Override
    public int flushBioCount() {
        return 1;
    }

    @Override
    public List<BlockDevice> devices() {
        List<BlockDevice> out = new ArrayList<>(3);
        for (DelayClass c : classes) {
            if (!out.contains(c.device)) {
                out.add(c.device);
            }
        }
        return out;
    }

    /** Clones held now. */
    public int heldCount() {
        lock.lock();
        try {
            return heldTotal;
        } finally {
            lock.unlock();
        }
    }

    /** Releases whatever is still held (the queue runs its armed item at once) and destroys the queue. */
    @Override
    public void close() {
        if (workqueue == null) {
            return;
        }
        lock.lock();
        mayDelay = false;
        lock.unlock();
        workqueue.close();
        workqueue = null;
        flushWork = null;
    }
}

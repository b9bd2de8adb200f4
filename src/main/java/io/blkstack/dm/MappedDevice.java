package io.blkstack.dm;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioList;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Mutex;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.Teardown;
import io.blkstack.kernel.WaitQueue;
import io.blkstack.mem.Gfp;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A device-mapper device (the kernel's {@code mapped_device}, bio-based): bios are cut at target
 * boundaries, each fragment is cloned from the device's own bio set and mapped by its target.
 *
 * <p><b>Splitting (seed 001).</b> Under the default {@code dm-split=front}, a bio that spans
 * targets (or a target's internal boundary such as a stripe chunk) is handled one fragment per
 * call: the front fragment becomes ONE newly allocated clone ({@link Bio#split} from this
 * device's set), which is mapped and submitted; the original is advanced past it and resubmitted
 * through {@link Submit#submitBio} as the remainder. The submit loop runs the remainder only after
 * everything the front produced went all the way down, so a later fragment never waits in the
 * pending list for an earlier one (the snapshot deadlock), and no call holds two unsubmitted
 * clones of this set (rule 1 of DESIGN.md section 1). Under {@code dm-split=legacy} the old loop
 * clones and maps every fragment inside one call.
 *
 * <p><b>Completion.</b> Each clone raises the original's remaining count; the clone's completion
 * runs the target's end-io hook, passes the first error to the original and ends it. An empty
 * flush goes to every target ({@link Target#flushBioCount} clones each). A data bio with PREFLUSH
 * first sends an empty flush to every target (under a parent from a small private set), and is
 * resubmitted without PREFLUSH from the workqueue when that flush completed, as dm does.
 *
 * <p><b>Suspend.</b> {@link #suspend} stops mapping: bios that arrive are held on an intrusive
 * deferred list (no allocation; bounded by the bios their submitters' pools hold), and it waits
 * until no mapping call runs and no clone is in flight. {@link #resume} swaps in the table loaded
 * by {@link #loadTable} and resubmits the held bios from a {@code MEM_RECLAIM} workqueue, whose
 * rescuer guarantees they move even when no worker can be created.
 */
public final class MappedDevice extends BlockDevice {

    /** Clones in the reserve of the device's bio set unless the kernel's reserves say otherwise. */
    public static final int CLONE_POOL_SIZE = 16;
    /** Flush parents (PREFLUSH with data) in reserve. */
    public static final int FLUSH_POOL_SIZE = 4;
    /** Held bios the workqueue resubmits in one run before yielding. */
    static final int DEFERRED_BATCH_MAX = 16;

    private final BioSet clones;
    private final BioSet flushParents;
    private final Workqueue workqueue;
    private final Work deferredWork;
    private final SpinLock lock;
    private final Mutex control;
    private final WaitQueue idle;
    private final BioEndIo cloneEndIo = this::cloneDone;
    private final BioEndIo flushParentEndIo = this::flushParentDone;

    // Guarded by lock.
    private final BioList deferred = new BioList();
    private final BioList requeued = new BioList();
    private volatile boolean suspended;

    private final AtomicInteger mappers = new AtomicInteger();
    private final AtomicInteger inFlight = new AtomicInteger();
    private final AtomicLong frontSplits = new AtomicLong();
    private final AtomicLong submitCalls = new AtomicLong();
    private final AtomicLong heldTotal = new AtomicLong();

    private volatile Table live;
    private Table inactive; // guarded by control
    private boolean closed;

    /**
     * Creates the device over {@code table}, which it now owns; the size is the table's, the clone
     * reserve the kernel's ({@link io.blkstack.kernel.Reserves#dmClones}).
     */
    public MappedDevice(Kernel kernel, String name, Table table) {
        this(kernel, name, table, kernel.reserves().dmClones());
    }

    /**
     * Creates the device over {@code table} with {@code cloneReserve} clones in its bio set's
     * reserve (the kernel's {@code dm_mod.reserved_bio_based_ios}); the seed scenarios use a small one.
     */
    @SuppressWarnings("this-escape")
    public MappedDevice(Kernel kernel, String name, Table table, int cloneReserve) {
        super(kernel, name, table.lengthSectors(), limitsOf(table));
        if (table.isClosed()) {
            throw new IllegalArgumentException("dm " + name + ": table is closed");
        }
        if (cloneReserve < 1) {
            throw new IllegalArgumentException("dm " + name + ": clone reserve " + cloneReserve + " is below 1");
        }
        this.lock = new SpinLock("dm " + name);
        this.control = new Mutex("dm " + name + " control");
        this.idle = new WaitQueue("dm " + name + " idle");
        this.clones = new BioSet(kernel, "dm-" + name, cloneReserve, 0, TargetIo::new, true);
        this.flushParents = new BioSet(kernel, "dm-" + name + "-flush", FLUSH_POOL_SIZE, 0, TargetIo::new, false);
        this.workqueue = Workqueue.create(kernel, "kdmflush/" + name, Workqueue.MEM_RECLAIM, 1);
        this.deferredWork = new Work("dm " + name + " deferred", this::processDeferred);
        for (Target t : table.targets()) {
            t.resume();
        }
        this.live = table;
    }

    /** The limits of a device over the table's devices; target boundaries are dm's own business. */
    private static QueueLimits limitsOf(Table table) {
        QueueLimits limits = QueueLimits.defaults();
        for (BlockDevice d : table.devices()) {
            limits = limits.stackedOn(d.limits());
        }
        return limits.withChunkSectors(0);
    }

    /** True if the live table only remaps reads onto devices that give references (checked at every map too). */
    @Override
    public boolean readsByReference() {
        return passesReadReference(live);
    }

    /** Whether every target of {@code table} passes references and every device below gives them. */
    private static boolean passesReadReference(Table table) {
        for (Target t : table.targets()) {
            if (!t.passesReadReference()) {
                return false;
            }
            for (BlockDevice d : t.devices()) {
                if (!d.readsByReference()) {
                    return false;
                }
            }
        }
        return true;
    }

    // ---- data path ---------------------------------------------------------------------------

    /** Holds the bio if suspended, else maps it against the live table. */
    @Override
    protected void submitBio(Bio bio) {
        submitCalls.incrementAndGet();
        lock.lock();
        if (suspended && bio.readReference() != null) {
            // Held here, it would wait for a suspend that waits for the parts of its READ already
            // held by reference (they complete only once the whole READ is sent): take pages.
            lock.unlock();
            bio.refuseReadReference();
            lock.lock();
        }
        if (suspended) {
            deferred.add(bio);
            lock.unlock();
            heldTotal.incrementAndGet();
            return;
        }
        mappers.incrementAndGet();
        Table table = live;
        lock.unlock();
        try {
            route(bio, table);
        } finally {
            mapperDone();
        }
    }

    /** Sends a bio down the path its operation needs. */
    private void route(Bio bio, Table table) {
        if (bio.readReference() != null && !passesReadReference(table)) {
            bio.refuseReadReference(); // the table was reloaded since the originator's check
        }
        boolean empty = bio.sizeBytes() == 0;
        if (bio.op() == BioOp.FLUSH || (empty && bio.hasFlag(BioFlags.PREFLUSH))) {
            sendFlush(bio, table);
            bio.endio();
        } else if (empty) {
            bio.endio();
        } else if (bio.hasFlag(BioFlags.PREFLUSH)) {
            startPreflush(bio, table);
        } else if (kernel().policies().isLegacy(PolicySwitch.DM_SPLIT)) {
            mapAllFragments(bio, table);
        } else {
            mapFrontFragment(bio, table);
        }
    }

    /**
     * The fixed design (seed 001): map the fragment at the bio's start; if the bio goes beyond it,
     * the front becomes a new clone and the advanced original goes back to the submit loop.
     */
    private void mapFrontFragment(Bio bio, Table table) {
        Target target = table.targetAt(bio.sector());
        long fit = fragmentSectors(target, bio.sector(), bio.endSector());
        if (fit >= bio.sectorCount()) {
            Bio clone = Bio.clone(bio, Gfp.NOIO, clones);
            startClone(clone, bio, target, 0);
            bio.endio();
            return;
        }
        Bio front = Bio.split(bio, (int) fit, Gfp.NOIO, clones);
        frontSplits.incrementAndGet();
        startClone(front, bio, target, 0);
        // The original (advanced) is the remainder: it queues behind what the front produced.
        Submit.submitBio(bio);
    }

    /** The legacy design: clone and map every fragment inside this one call. */
    private void mapAllFragments(Bio bio, Table table) {
        long start = bio.sector();
        long end = bio.endSector();
        for (long sector = start; sector < end; ) {
            Target target = table.targetAt(sector);
            long fit = fragmentSectors(target, sector, end);
            Bio clone = Bio.clone(bio, Gfp.NOIO, clones);
            clone.trim(sector - start, fit);
            startClone(clone, bio, target, 0);
            sector += fit;
        }
        bio.endio();
    }

    /** How many sectors from {@code sector} (before {@code end}) one clone to {@code target} may cover. */
    private static long fragmentSectors(Target target, long sector, long end) {
        long offset = sector - target.begin();
        long fit = Math.min(target.maxIoSectors(offset), target.length() - offset);
        if (fit <= 0) {
            throw new IllegalStateException("target " + target.type() + " at " + target.begin() + " allows " + fit
                    + " sectors at offset " + offset);
        }
        return Math.min(fit, end - sector);
    }

    /** Sends an empty flush clone to each device of each target (the kernel's {@code __send_empty_flush}). */
    private void sendFlush(Bio bio, Table table) {
        for (int i = 0; i < table.targetCount(); i++) {
            Target target = table.target(i);
            for (int n = 0; n < target.flushBioCount(); n++) {
                Bio clone = Bio.clone(bio, Gfp.NOIO, clones);
                clone.setOp(BioOp.FLUSH);
                clone.setFlags(bio.flags() & ~BioFlags.FUA);
                startClone(clone, bio, target, n);
            }
        }
    }

    /** PREFLUSH with data: flush every target first; the data goes when the flush completed. */
    private void startPreflush(Bio bio, Table table) {
        Bio parent = flushParents.alloc(Gfp.NOIO, 0);
        parent.init(this, BioOp.FLUSH, BioFlags.PREFLUSH, 0);
        TargetIo ptio = parent.frontPad();
        ptio.reset(bio, null, 0);
        ptio.flushParent = true;
        parent.setEndIo(flushParentEndIo);
        inFlight.incrementAndGet();
        sendFlush(parent, table);
        parent.endio();
    }

    /** Sets the clone up for {@code target}, counts it on the original, and maps it. */
    private void startClone(Bio clone, Bio original, Target target, int number) {
        TargetIo tio = clone.frontPad();
        tio.reset(original, target, number);
        tio.fragmentSector = clone.sector();
        tio.fragmentBytes = clone.sizeBytes();
        clone.setEndIo(cloneEndIo);
        original.incRemaining();
        inFlight.incrementAndGet();
        mapClone(clone, tio);
    }

    /** Calls the target's map and acts on its answer. */
    private void mapClone(Bio clone, TargetIo tio) {
        MapResult result = tio.target.map(clone, tio);
        switch (result) {
            case REMAPPED -> {
                if (clone.device() == this || clone.device() == null) {
                    throw new IllegalStateException("target " + tio.target.type() + " remapped " + clone
                            + " to " + clone.device());
                }
                Submit.submitBio(clone);
            }
            case SUBMITTED -> {
            }
            case KILL -> {
                clone.setStatus(BioStatus.IOERR);
                clone.endio();
            }
            case REQUEUE -> requeue(clone, tio);
        }
    }

    /** Parks a clone its target asked to retry; the workqueue maps it again (after resume, if suspended). */
    private void requeue(Bio clone, TargetIo tio) {
        clone.setDevice(this).setSector(tio.fragmentSector);
        if (clone.sizeBytes() != tio.fragmentBytes) {
            throw new IllegalStateException("target " + tio.target.type() + " changed the size of requeued " + clone);
        }
        lock.lock();
        requeued.add(clone);
        lock.unlock();
        inFlightDone();
        if (!suspended) {
            workqueue.queue(deferredWork);
        }
    }

    /** A clone's completion (atomic context): target end-io, first error to the original, end it. */
    private void cloneDone(Bio clone) {
        TargetIo tio = clone.frontPad();
        Target target = tio.target;
        Bio original = tio.original;
        target.endIo(clone, tio, clone.status());
        BioStatus status = clone.status();
        tio.original = null;
        tio.target = null;
        clone.put();
        if (status.isError()) {
            original.setStatus(status);
        }
        inFlightDone();
        original.endio();
    }

    /** The flush before a PREFLUSH data bio completed: fail the bio, or queue its data part. */
    private void flushParentDone(Bio parent) {
        TargetIo ptio = parent.frontPad();
        Bio bio = ptio.original;
        BioStatus status = parent.status();
        ptio.original = null;
        parent.put();
        if (status.isError()) {
            bio.setStatus(status);
            inFlightDone();
            bio.endio();
            return;
        }
        bio.setFlags(bio.flags() & ~BioFlags.PREFLUSH);
        lock.lock();
        deferred.add(bio);
        lock.unlock();
        inFlightDone();
        workqueue.queue(deferredWork);
    }

    private void mapperDone() {
        if (mappers.decrementAndGet() == 0 && suspended) {
            idle.wakeAll();
        }
    }

    private void inFlightDone() {
        int left = inFlight.decrementAndGet();
        if (left < 0) {
            throw new IllegalStateException("dm " + name() + ": in-flight count " + left);
        }
        if (left == 0 && suspended) {
            idle.wakeAll();
        }
    }

    /** The workqueue item: resubmits held bios and re-maps requeued clones, a batch at a time. */
    private void processDeferred() {
        for (int n = 0; n < DEFERRED_BATCH_MAX; n++) {
            lock.lock();
            if (suspended) {
                lock.unlock();
                return;
            }
            Bio clone = requeued.pop();
            Bio bio = clone == null ? deferred.pop() : null;
            if (clone != null) {
                mappers.incrementAndGet();
            }
            Table table = live;
            lock.unlock();
            if (clone == null && bio == null) {
                return;
            }
            if (bio != null) {
                Submit.submitBio(bio);
                continue;
            }
            try {
                remapRequeued(clone, table);
            } finally {
                mapperDone();
            }
        }
        lock.lock();
        boolean more = !suspended && (!deferred.isEmpty() || !requeued.isEmpty());
        lock.unlock();
        if (more) {
            workqueue.queue(deferredWork);
        }
    }

    /** Maps a requeued clone again with the live table's target at its sector (the table may have changed). */
    private void remapRequeued(Bio clone, Table table) {
        TargetIo tio = clone.frontPad();
        inFlight.incrementAndGet();
        if (clone.sizeBytes() == 0) {
            // A requeued empty flush stays with its target's position in the new table if it has one.
            tio.target = table.target(Math.min(indexOf(table, tio.target), table.targetCount() - 1));
        } else {
            Target target = table.targetAt(tio.fragmentSector);
            if (fragmentSectors(target, tio.fragmentSector, clone.endSector()) < clone.sectorCount()) {
                clone.setStatus(BioStatus.IOERR);
                clone.endio();
                return;
            }
            tio.target = target;
        }
        mapClone(clone, tio);
    }

    private static int indexOf(Table table, Target target) {
        int i = table.targets().indexOf(target);
        return Math.max(i, 0);
    }

    // ---- control path ------------------------------------------------------------------------

    /**
     * Stops mapping and waits until every mapping call and every clone in flight finished (the
     * kernel's {@code dm_suspend}); bios that arrive meanwhile are held until {@link #resume}.
     */
    public void suspend() {
        suspend(-1);
    }

    /**
     * {@link #suspend}, waiting at most {@code timeoutNanos} (negative: no limit) for the mapping
     * calls and clones in flight. If they have not all finished by then, the suspend fails: the
     * targets are resumed, the bios held meanwhile are resubmitted, and the device runs on as
     * before (the kernel's {@code dm_suspend} undoing a failed presuspend). Returns whether the
     * device is now suspended.
     */
    public boolean suspend(long timeoutNanos) {
        requireControlContext("suspend");
        control.lock();
        try {
            if (suspended) {
                throw new IllegalStateException("dm " + name() + " is already suspended");
            }
            lock.lock();
            suspended = true;
            lock.unlock();
            Table table = live;
            for (Target t : table.targets()) {
                t.presuspend();
            }
            if (!idle.waitEventTimeout(() -> mappers.get() == 0 && inFlight.get() == 0, "suspend of dm " + name(),
                    timeoutNanos, false)) {
                undoSuspend(table);
                return false;
            }
            for (Target t : table.targets()) {
                t.postsuspend();
            }
            return true;
        } finally {
            control.unlock();
        }
    }

    /** A suspend that timed out, or one ended by {@link #resumeLive}: the live table's targets run again and the held bios go out. */
    private void undoSuspend(Table table) {
        for (Target t : table.targets()) {
            t.resume();
        }
        lock.lock();
        suspended = false;
        boolean held = !deferred.isEmpty() || !requeued.isEmpty();
        lock.unlock();
        if (held) {
            workqueue.queue(deferredWork);
        }
    }

    /**
     * Makes the inactive table live if one was loaded (suspending first if needed), resumes the
     * targets and resubmits the held bios from the workqueue (the kernel's {@code dm_resume}).
     */
    public void resume() {
        requireControlContext("resume");
        if (!suspended && hasInactiveTable()) {
            suspend();
        }
        control.lock();
        Table old = null;
        try {
            if (!suspended) {
                return;
            }
            if (inactive != null) {
                old = live;
                live = inactive;
                inactive = null;
            }
            for (Target t : live.targets()) {
                t.resume();
            }
            lock.lock();
            suspended = false;
            boolean held = !deferred.isEmpty() || !requeued.isEmpty();
            lock.unlock();
            if (held) {
                workqueue.queue(deferredWork);
            }
        } finally {
            control.unlock();
        }
        if (old != null) {
            old.close();
        }
    }

    /**
     * Loads {@code table} as the inactive table (replacing an earlier one, which is closed); it
     * becomes live at the next {@link #resume}. The size must stay the same.
     */
    public void loadTable(Table table) {
        if (table.lengthSectors() != capacitySectors()) {
            throw new IllegalArgumentException("dm " + name() + ": table of " + table.lengthSectors()
                    + " sectors for a device of " + capacitySectors() + " (resizing is not supported)");
        }
        if (table == live) {
            throw new IllegalArgumentException("dm " + name() + ": table is already live");
        }
        Table old;
        control.lock();
        try {
            old = inactive;
            inactive = table;
        } finally {
            control.unlock();
        }
        if (old != null) {
            old.close();
        }
    }

    /**
     * Resumes a suspended device with its live table, dropping a loaded inactive one, so that the
     * bios it holds go out: for an owner that stops and will send no resume ({@code serve}'s stop,
     * after its control socket closed), whose drain would otherwise wait for them for ever. Returns
     * whether the device was suspended.
     */
    public boolean resumeLive() {
        requireControlContext("resume");
        if (!suspended) {
            return false;
        }
        clearInactiveTable();
        control.lock();
        try {
            if (!suspended) {
                return false;
            }
            undoSuspend(live);
            return true;
        } finally {
            control.unlock();
        }
    }

    /** Drops the inactive table, if any ({@code dmsetup clear}). */
    public void clearInactiveTable() {
        Table old;
        control.lock();
        try {
            old = inactive;
            inactive = null;
        } finally {
            control.unlock();
        }
        if (old != null) {
            old.close();
        }
    }

    /** The table loaded to become live at the next {@link #resume}, or null. */
    public Table inactiveTable() {
        control.lock();
        try {
            return inactive;
        } finally {
            control.unlock();
        }
    }

    /** Whether a table waits to become live. */
    public boolean hasInactiveTable() {
        control.lock();
        try {
            return inactive != null;
        } finally {
            control.unlock();
        }
    }

    /** Each live target's line in the given form ({@code dmsetup status} / {@code dmsetup table}). */
    public List<String> status(StatusForm form) {
        Table table = live;
        List<String> out = new ArrayList<>(table.targetCount());
        for (Target t : table.targets()) {
            out.add(Table.line(t, form == StatusForm.TABLE ? t.statusTable() : t.statusInfo()));
        }
        return out;
    }

    /** Sends a message to the live target covering {@code sector} ({@code dmsetup message}). */
    public String message(long sector, String... args) {
        if (args.length == 0) {
            throw new IllegalArgumentException("dm " + name() + ": empty message");
        }
        control.lock();
        try {
            return live.targetAt(sector).message(args);
        } finally {
            control.unlock();
        }
    }

    private void requireControlContext(String what) {
        Task self = Task.current();
        if (Submit.inSubmitLoop(self)) {
            throw new IllegalStateException(what + " of dm " + name() + " from inside the submit loop of " + self
                    + " would wait for bios queued behind the call");
        }
    }

    /** Whether some live target keeps an allocation map; the others then report their ranges allocated. */
    @Override
    public boolean knowsAllocation() {
        Table table = live;
        for (int i = 0, n = table.targetCount(); i < n; i++) { // by index: targets() copies the list
            if (table.target(i).knowsAllocation()) {
                return true;
            }
        }
        return false;
    }

    /** The allocation run at {@code sector}, asked of the live target there and cut at its end. */
    @Override
    public long allocatedExtent(long sector, long maxSectors) {
        super.allocatedExtent(sector, maxSectors);
        Target t = live.targetAt(sector);
        long offset = sector - t.begin();
        long max = Math.min(maxSectors, t.length() - offset);
        long run = t.allocatedExtent(offset, max);
        if (run == 0 || Math.abs(run) > max) {
            throw new IllegalStateException("target " + t.type() + " at " + t.begin() + " reported extent " + run
                    + " for at most " + max + " sectors at offset " + offset);
        }
        return run;
    }

    /** The live table. */
    public Table table() {
        return live;
    }

    /** Whether the device is suspended. */
    public boolean isSuspended() {
        return suspended;
    }

    /** Clones (and flush parents) not yet completed. */
    public int inFlight() {
        return inFlight.get();
    }

    /** Bios held while suspended (or waiting for their data phase after a flush). */
    public int heldCount() {
        lock.lock();
        try {
            return deferred.size() + requeued.size();
        } finally {
            lock.unlock();
        }
    }

    /** Front fragments split off (fixed design only). */
    public long frontSplits() {
        return frontSplits.get();
    }

    /** How many times the submit loop handed this device a bio (remainders count again). */
    public long submitCalls() {
        return submitCalls.get();
    }

    /** The bio set clones come from. */
    public BioSet cloneSet() {
        return clones;
    }

    @Override
    public String describeState() {
        return "dm " + name() + ": " + (suspended ? "suspended" : "live") + ", " + inFlight.get()
                + " clone(s) in flight, " + mappers.get() + " mapping, held " + heldCount() + ", table "
                + live.targetCount() + " target(s)";
    }

    /**
     * Drains the workqueue, fails whatever is still held (a closed device cannot serve it), tears
     * down both tables and closes the bio sets, which check that every clone came back.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        workqueue.close();
        for (Bio b = popHeld(); b != null; b = popHeld()) {
            b.setStatus(BioStatus.IOERR);
            b.endio();
        }
        live.close();
        if (inactive != null) {
            inactive.close();
        }
        Teardown teardown = new Teardown().close(clones).close(flushParents);
        super.close();
        teardown.finish();
    }

    private Bio popHeld() {
        lock.lock();
        try {
            Bio b = requeued.pop();
            return b != null ? b : deferred.pop();
        } finally {
            lock.unlock();
        }
    }
}

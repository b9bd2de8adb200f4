package io.blkstack.block;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioEndIo;
import io.blkstack.bio.BioList;
import io.blkstack.bio.BioState;
import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskSlot;

/**
 * The submit loop: how every bio reaches its device (the kernel's {@code submit_bio_noacct} for
 * bio-based, stacking drivers).
 *
 * <p>Recursion becomes iteration. If the current task is already inside the loop, a submitted bio
 * is only appended to the task's pending list and the call returns; the outermost call runs the
 * loop. Under the default (depth-first) order each device call gets a fresh list; afterwards the
 * bios it produced are sorted into those for other (lower) devices and those for the same
 * device, and the list becomes lower, then same, then the older siblings parked before the call.
 * So a bio is fully processed down the stack before its siblings, and a remainder resubmitted to
 * the same device waits until the front split off it has gone all the way down (seed 001). Under
 * {@code submit-order=legacy} the list is a single FIFO, the pre-2017 order.
 *
 * <p>Before a device sees a bio the loop checks its range: beyond the device's end or misaligned
 * to the logical block size completes the bio with {@link BioStatus#INVAL}; nothing is thrown
 * into the submitter.
 */
public final class Submit {

    /** The current task's pending lists, present only while the task runs the loop. */
    private static final TaskSlot<PendingBios> PENDING = TaskSlot.create("bio pending lists");

    private Submit() {
    }

    /** A task's two pending lists and the loop's scratch lists, allocated once per task. */
    private static final class PendingBios {
        final BioList[] lists = {new BioList(), new BioList()};
        final BioList lower = new BioList();
        final BioList same = new BioList();
        boolean active;
    }

    /**
     * Submits a bio to its device through the loop described in the class comment. The bio's
     * completion may run before this returns, on this task or on any other.
     */
    public static void submitBio(Bio bio) {
        BlockDevice dev = bio.device();
        if (dev == null) {
            throw new IllegalArgumentException("submit of " + bio + " with no device");
        }
        Task self = Task.current();
        PendingBios pending = self.get(PENDING);
        if (pending == null) {
            pending = new PendingBios();
            self.set(PENDING, pending);
        }
        if (pending.active) {
            bio.setState(BioState.PENDING, self);
            pending.lists[0].add(bio);
            return;
        }
        pending.active = true;
        try {
            if (dev.kernel().policies().isLegacy(PolicySwitch.SUBMIT_ORDER)) {
                runFifo(pending, bio);
            } else {
                runDepthFirst(pending, bio);
            }
        } finally {
            pending.active = false;
            int left = pending.lists[0].clear() + pending.lists[1].clear() + pending.lower.clear()
                    + pending.same.clear();
            if (left > 0) {
                // Only reachable if a device threw: those bios are dropped, and the pools' close reports them.
                self.kernel().reportMisuse(self, "submit loop left by an exception with " + left
                        + " bio(s) pending; they are lost");
            }
        }
    }

    /** The two-list depth-first loop of DESIGN.md section 4. */
    private static void runDepthFirst(PendingBios pending, Bio first) {
        BioList[] lists = pending.lists;
        BioList lower = pending.lower;
        BioList same = pending.same;
        Bio bio = first;
        do {
            BlockDevice dev = bio.device();
            // Park the older siblings; the device call gets a fresh list (swap: lists[1] is empty).
            BioList parked = lists[0];
            lists[0] = lists[1];
            lists[1] = parked;
            dispatch(bio);
            for (Bio b = lists[0].pop(); b != null; b = lists[0].pop()) {
                (b.device() == dev ? same : lower).add(b);
            }
            lists[0].merge(lower);
            lists[0].merge(same);
            lists[0].merge(lists[1]);
        } while ((bio = lists[0].pop()) != null);
    }

    /** The legacy single-FIFO loop (the pre-2017 {@code generic_make_request}). */
    private static void runFifo(PendingBios pending, Bio first) {
        Bio bio = first;
        do {
            dispatch(bio);
        } while ((bio = pending.lists[0].pop()) != null);
    }

    /** Checks the bio's range and hands it to its device, or fails it with INVAL. */
    private static void dispatch(Bio bio) {
        BlockDevice dev = bio.device();
        if (dev == null) {
            throw new IllegalStateException("pending " + bio + " lost its device");
        }
        if (bio.accountingStats() == null) {
            // First time on a device: its statistics count the bio until Bio.endio (DeviceStats).
            DeviceStats stats = dev.stats();
            stats.start();
            bio.startAccounting(stats, System.nanoTime());
        }
        if (!rangeValid(bio, dev)) {
            bio.setStatus(BioStatus.INVAL);
            bio.setState(BioState.IN_FLIGHT, dev);
            bio.endio();
            return;
        }
        bio.setState(BioState.IN_FLIGHT, dev);
        dev.dispatch(bio);
    }

    /** Whether the range lies inside the device and is aligned to its logical block size. */
    static boolean rangeValid(Bio bio, BlockDevice dev) {
        int size = bio.sizeBytes();
        if (size == 0) {
            return bio.sector() <= dev.capacitySectors();
        }
        int lbs = dev.limits().logicalBlockSize();
        if (size % lbs != 0 || ((bio.sector() << Bio.SECTOR_SHIFT) % lbs) != 0) {
            return false;
        }
        long end = bio.sector() + (size >>> Bio.SECTOR_SHIFT);
        return bio.sector() >= 0 && end <= dev.capacitySectors();
    }

    /** Whether the task is running the submit loop and has bios on its pending lists. */
    public static boolean hasPending(Task task) {
        PendingBios pending = task.get(PENDING);
        return pending != null && pending.active && (!pending.lists[0].isEmpty() || !pending.lists[1].isEmpty());
    }

    /** Whether the task is inside the submit loop (the kernel's {@code current->bio_list != NULL}). */
    public static boolean inSubmitLoop(Task task) {
        PendingBios pending = task.get(PENDING);
        return pending != null && pending.active;
    }

    /**
     * The task's two pending lists while it runs the loop (index 0: bios submitted by the device
     * call in progress; 1: older siblings parked before it), or null outside the loop. Only the
     * task itself may touch them; bio sets use this to punt to their rescuer.
     */
    public static BioList[] pendingLists(Task task) {
        PendingBios pending = task.get(PENDING);
        return pending != null && pending.active ? pending.lists : null;
    }

    /**
     * Submits a bio and waits for its completion (the kernel's {@code submit_bio_wait}); for tests
     * and control paths. The bio's callback and private data are replaced; the caller still owns
     * its reference.
     *
     * @return 0 on success, else the negative errno of the bio's status
     */
    public static int submitAndWait(Bio bio) {
        BioStatus status = submitAndWaitStatus(bio);
        return -status.errno();
    }

    /** As {@link #submitAndWait}, returning the status itself. */
    public static BioStatus submitAndWaitStatus(Bio bio) {
        Task self = Task.current();
        if (inSubmitLoop(self)) {
            throw new IllegalStateException("submitAndWait of " + bio + " inside the submit loop of " + self
                    + " would wait for a bio that is only queued behind this call");
        }
        Completion done = new Completion("submit-wait " + self);
        bio.setEndIo(WAIT_ENDIO);
        bio.setPrivateData(done);
        submitBio(bio);
        done.await();
        return bio.status();
    }

    private static final BioEndIo WAIT_ENDIO = b -> ((Completion) b.privateData()).complete();
}

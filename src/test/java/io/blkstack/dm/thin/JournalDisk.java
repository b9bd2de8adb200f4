package io.blkstack.dm.thin;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.SpinLock;
import java.util.ArrayList;
import java.util.List;

/**
 * A test disk over a byte array that completes every bio at once and, when given a journal,
 * records every write (with its bytes) and every flush in submission order across all disks of
 * the journal. Replaying a prefix of the journal that ends at a flush gives a state the disks may
 * be in after a power cut (everything before the flush had landed).
 */
final class JournalDisk extends BlockDevice {

    /** One recorded operation; {@code data} is null for a flush. */
    record Entry(int disk, long sector, byte[] data) {
        boolean isFlush() {
            return data == null;
        }
    }

    /** The ordered record shared by the disks of one machine. */
    static final class Journal {
        private final SpinLock lock = new SpinLock("journal");
        private final List<Entry> entries = new ArrayList<>();

        void add(Entry e) {
            lock.lock();
            try {
                entries.add(e);
            } finally {
                lock.unlock();
            }
        }

        int size() {
            lock.lock();
            try {
                return entries.size();
            } finally {
                lock.unlock();
            }
        }

        List<Entry> entries() {
            lock.lock();
            try {
                return List.copyOf(entries);
            } finally {
                lock.unlock();
            }
        }

        /** The disk images after the first {@code length} entries, starting from zeros. */
        byte[][] replay(int length, int disks, int bytesEach) {
            byte[][] out = new byte[disks][bytesEach];
            List<Entry> all = entries();
            for (int i = 0; i < length; i++) {
                Entry e = all.get(i);
                if (!e.isFlush()) {
                    System.arraycopy(e.data(), 0, out[e.disk()], (int) (e.sector() << Bio.SECTOR_SHIFT), e.data().length);
                }
            }
            return out;
        }
    }

    private final byte[] data;
    private final int index;
    private final Journal journal;
    private final SpinLock lock;

    JournalDisk(Kernel kernel, String name, byte[] data, int index, Journal journal) {
        super(kernel, name, data.length >>> Bio.SECTOR_SHIFT, QueueLimits.defaults());
        this.data = data;
        this.index = index;
        this.journal = journal;
        this.lock = new SpinLock("disk " + name);
    }

    @Override
    protected void submitBio(Bio bio) {
        int pos = (int) (bio.sector() << Bio.SECTOR_SHIFT);
        int n = bio.sizeBytes();
        lock.lock();
        try {
            switch (bio.op()) {
                case READ -> {
                    byte[] tmp = new byte[n];
                    System.arraycopy(data, pos, tmp, 0, n);
                    bio.copyFrom(tmp, 0);
                }
                case WRITE -> {
                    byte[] tmp = new byte[n];
                    bio.copyTo(tmp, 0);
                    System.arraycopy(tmp, 0, data, pos, n);
                    record(bio.sector(), tmp);
                }
                case WRITE_ZEROES, DISCARD -> {
                    java.util.Arrays.fill(data, pos, pos + n, (byte) 0);
                    record(bio.sector(), new byte[n]);
                }
                case FLUSH -> {
                    if (journal != null) {
                        journal.add(new Entry(index, 0, null));
                    }
                }
            }
        } finally {
            lock.unlock();
        }
        if (bio.op() == BioOp.FLUSH || bio.hasFlag(io.blkstack.bio.BioFlags.FUA)) {
            if (journal != null && bio.op() != BioOp.FLUSH) {
                journal.add(new Entry(index, 0, null));
            }
        }
        bio.endio();
    }

    private void record(long sector, byte[] bytes) {
        if (journal != null) {
            journal.add(new Entry(index, sector, bytes));
        }
    }
}

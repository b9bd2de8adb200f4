package io.blkstack.dm.snapshot;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.Submit;
import io.blkstack.dm.MapResult;
import io.blkstack.dm.TableException;
import io.blkstack.dm.Target;
import io.blkstack.dm.TargetArgs;
import io.blkstack.dm.TargetIo;
import io.blkstack.dm.snapshot.DeferredRemap;
import io.blkstack.dm.snapshot.Snapshot;
import io.blkstack.dm.snapshot.SnapshotBioState;
import java.util.List;

/**
 * {@code snapshot <origin dev> <COW device> <P|N> <chunk size>}: the origin as it was when the
 * snapshot was created (dm-snapshot). Chunks the origin has since overwritten (or the snapshot's
 * users wrote) live on the COW device; the rest is read from the origin. A write to a chunk without
 * an exception first copies the origin chunk to a new COW chunk (through the snapshot's pending
 * exception, never blocking in {@code map}) and then goes to the COW device; the origin is never
 * written. {@code P} keeps the exceptions on the COW device across reopen and crashes, {@code N}
 * in memory only. When the COW device is full the snapshot becomes invalid: its I/O fails with
 * EIO, its status says {@code Invalid}, and the origin carries on.
 *
 * <p>Chunk size: a power of two of at least 8 sectors (one page), at most {@link #CHUNK_SECTORS_MAX}.
 * Reloading a table with a second snapshot on the same COW device while the first is live is
 * refused (dm's handover is not implemented).
 */
public final class SnapshotTarget extends Target implements DeferredRemap {

    /** The table type name. */
    public static final String TYPE = "snapshot";
    /** The largest chunk: 1 MiB, the copy service's largest job. */
    public static final int CHUNK_SECTORS_MAX = 2048;

    private final BlockDevice origin;
    private final String originName;
    private final BlockDevice cow;
    private final String cowName;
    private final String modeWord;
    private final int chunkSectors;
    private final Snapshot snapshot;

    /** Parses the four arguments and opens the exception store (reading a persistent one back). */
    public SnapshotTarget(TargetArgs args) throws TableException {
        super(args);
        args.requireCount(4, "<origin dev> <COW device> <P|N> <chunk size>");
        this.origin = args.device(1);
        this.originName = args.word(1);
        this.cow = args.device(2);
        this.cowName = args.word(2);
        if (origin == cow) {
            throw args.error(2, "is the origin device too");
        }
        this.modeWord = args.word(3);
        boolean persistent;
        if (modeWord.equalsIgnoreCase("P")) {
            persistent = true;
        } else if (modeWord.equalsIgnoreCase("N")) {
            persistent = false;
        } else {
            throw args.error(3, "must be P (persistent) or N (transient)");
        }
        this.chunkSectors = args.intInRange(4, 8, CHUNK_SECTORS_MAX, "chunk size in sectors");
        if (Integer.bitCount(chunkSectors) != 1) {
            throw args.error(4, "chunk size must be a power of two");
        }
        if (args.length() > origin.capacitySectors()) {
            throw args.error(1, "has " + origin.capacitySectors() + " sectors, fewer than the target's " + args.length());
        }
        try {
            this.snapshot = Snapshot.open(args.kernel(), args.mappedDeviceName() + "@" + args.begin(), origin, cow,
                    persistent, chunkSectors);
        } catch (IllegalArgumentException e) {
            throw args.error(2, e.getMessage());
        }
    }

    @Override
    public MapResult map(Bio clone, TargetIo io) {
        if (clone.sizeBytes() == 0) {
            clone.setDevice(io.bioNumber() == 0 ? origin : cow).setSector(0);
            return MapResult.REMAPPED;
        }
        if (clone.op() != BioOp.READ && clone.op() != BioOp.WRITE) {
            clone.setStatus(BioStatus.NOTSUPP);
            return MapResult.KILL;
        }
        SnapshotBioState state = io.perBioData();
        return snapshot.mapSnapshotIo(clone, targetOffset(clone), state);
    }

    /** Ends origin-read tracking for the clone. */
    @Override
    public void endIo(Bio clone, TargetIo io, BioStatus status) {
        SnapshotBioState state = io.perBioData();
        snapshot.snapshotIoDone(state);
    }

    /** A write that waited for its exception: map it again and submit or fail it. */
    @Override
    public void remapDeferred(Bio clone) {
        TargetIo tio = clone.frontPad();
        switch (map(clone, tio)) {
            case REMAPPED -> Submit.submitBio(clone);
            case SUBMITTED -> {
            }
            case KILL, REQUEUE -> {
                clone.setStatus(BioStatus.IOERR);
                clone.endio();
            }
        }
    }

    /**
     * No: a snapshot READ of a chunk not yet copied reads the origin, and once the copy-out is done
     * the origin's write overwrites that range. The write waits for the READ to complete, after its
     * send, but the peer may take the bytes later than that (TCP's retransmissions until it
     * acknowledged them; a local peer's receive queue until it reads), so the snapshot's reply could
     * carry data written to the origin after the snapshot. See docs/architecture.md.
     */
    @Override
    public boolean passesReadReference() {
        return false;
    }

    @Override
    protected Object newPerBioData() {
        return new SnapshotBioState();
    }

    /** Cuts bios at chunk boundaries. */
    @Override
    public long maxIoSectors(long offset) {
        return Math.min(length() - offset, chunkSectors - (offset & (chunkSectors - 1)));
    }

    @Override
    public String statusInfo() {
        return snapshot.statusInfo();
    }

    @Override
    public String statusTable() {
        return originName + " " + cowName + " " + modeWord + " " + chunkSectors;
    }

    @Override
    public int flushBioCount() {
        return 2;
    }

    @Override
    public List<BlockDevice> devices() {
        return List.of(origin, cow);
    }

    /** Joins origin writes once the table is live. */
    @Override
    public void resume() {
        snapshot.activate();
    }

    @Override
    public void close() {
        snapshot.close();
    }

    /** The snapshot's shared state, for tests and status. */
    public Snapshot snapshot() {
        return snapshot;
    }
}

package io.blkstack.scenario;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioSet;
import io.blkstack.kernel.Kernel;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.util.ArrayList;
import java.util.List;

/**
 * Exhausted memory for a scenario: takes every page the arena gives without waiting, then every
 * free slab object of the given bio sets except {@code spareBios} per set, so each set can hand
 * out only its reserve plus the spares and slab growth fails. What the seeds call "memory
 * exhausted": from here on only the reserves guarantee progress. {@link #release} gives it all back.
 */
final class MemoryPressure {

    private final Kernel kernel;
    private final List<Page> pages = new ArrayList<>();
    private final List<Bio> bios = new ArrayList<>();

    private MemoryPressure(Kernel kernel) {
        this.kernel = kernel;
    }

    /** Exhausts the arena and the sets' slabs; call from a kernel task after building the stack. */
    static MemoryPressure exhaust(Kernel kernel, int spareBios, BioSet... sets) {
        return exhaust(kernel, 0, spareBios, sets);
    }

    /**
     * As {@link #exhaust(Kernel, int, BioSet...)}, then gives {@code sparePages} pages back to the
     * arena: memory is nearly exhausted, so the reserves are needed only when the tasks' own
     * allocations use the spares up (the scenarios' hard shapes).
     */
    static MemoryPressure exhaust(Kernel kernel, int sparePages, int spareBios, BioSet... sets) {
        if (spareBios < 0 || sparePages < 0) {
            throw new IllegalArgumentException("spare bios and pages must not be negative: " + spareBios + ", " + sparePages);
        }
        MemoryPressure m = new MemoryPressure(kernel);
        m.takeFreePages();
        int pagesMax = kernel.pages().totalPages();
        for (BioSet set : sets) {
            m.takeSlabObjects(set, spareBios, (long) pagesMax * Page.SIZE);
        }
        for (int i = 0; i < sparePages && !m.pages.isEmpty(); i++) {
            kernel.pages().free(m.pages.remove(m.pages.size() - 1));
        }
        return m;
    }

    /**
     * Takes every page the arena gives without waiting (again: reclaim may have freed some since);
     * a take below the low watermark wakes the background reclaim task, as any allocation does.
     */
    void takeFreePages() {
        int pagesMax = kernel.pages().totalPages();
        for (Page p = kernel.pages().alloc(Gfp.NOWAIT); p != null; p = kernel.pages().alloc(Gfp.NOWAIT)) {
            pages.add(p);
            if (pages.size() > pagesMax) {
                throw new IllegalStateException("took " + pages.size() + " pages from an arena of " + pagesMax);
            }
        }
    }

    /** Takes the set's free slab bios while its reserve stays full, then gives {@code spare} back. */
    private void takeSlabObjects(BioSet set, int spare, long bound) {
        List<Bio> taken = new ArrayList<>();
        while (taken.size() <= bound) {
            Bio b = set.alloc(Gfp.NOWAIT, 0);
            if (b == null) {
                break;
            }
            if (set.bioPool().reserveLevel() < set.bioPool().minNr()) {
                b.put();
                break;
            }
            taken.add(b);
        }
        for (int i = 0; i < spare && !taken.isEmpty(); i++) {
            taken.remove(taken.size() - 1).put();
        }
        bios.addAll(taken);
    }

    /** Gives every page and bio back. */
    void release() {
        bios.forEach(Bio::put);
        bios.clear();
        pages.forEach(kernel.pages()::free);
        pages.clear();
    }
}

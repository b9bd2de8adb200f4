package io.blkstack.bio;

import io.blkstack.block.Submit;
import io.blkstack.kernel.Kernel;
import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;

/**
 * The rescuer of one {@link BioSet}: a {@code MEM_RECLAIM} workqueue whose single work item takes
 * the set's rescue list and submits each bio through the submit loop from the workqueue's own
 * task (the kernel's {@code bio_alloc_rescue}). {@code MEM_RECLAIM} guarantees the item runs even
 * when no new worker can be created, because its own rescuer task exists from the start.
 */
final class BioRescuer implements AutoCloseable {

    private final BioSet set;
    private final Workqueue queue;
    private final Work work;

    BioRescuer(Kernel kernel, BioSet set, String name) {
        this.set = set;
        this.queue = Workqueue.create(kernel, "bioset-" + name, Workqueue.MEM_RECLAIM, 1);
        this.work = new Work("bio rescue " + name, this::rescue);
    }

    /** Queues the rescue work; if it is already pending it will find the new bios too. */
    void kick() {
        queue.queue(work);
    }

    /** The work function: submits every punted bio, one at a time, until the list is empty. */
    private void rescue() {
        for (Bio bio = set.popRescued(); bio != null; bio = set.popRescued()) {
            Submit.submitBio(bio);
        }
    }

    /** Drains and destroys the workqueue. */
    @Override
    public void close() {
        queue.close();
    }
}

package io.blkstack.mem;

import jdk.jfr.Category;
import jdk.jfr.Description;
import jdk.jfr.Label;
import jdk.jfr.Name;
import jdk.jfr.StackTrace;

/**
 * JFR: a mempool handed out an element of its reserve because the allocator had none (step 2 of
 * the mempool algorithm, DESIGN.md section 3). Seen in a recording, these mark the moments the
 * data path ran on its guaranteed minimum. Committed only while a recording enables it; the
 * caller checks {@link #shouldCommit} after building the event, so a disabled event costs a
 * flag test.
 */
@Name("blkstack.MempoolReserveUse")
@Label("Mempool Reserve Use")
@Category({"blkstack", "Forward Progress"})
@Description("A mempool gave out a reserve element because its allocator had none")
@StackTrace(false)
public final class MempoolReserveEvent extends jdk.jfr.Event {

    @Label("Mempool")
    public String pool;

    @Label("Reserve Left")
    @Description("Elements still in the reserve after this one was taken")
    public int reserveLeft;

    @Label("Reserve Size")
    @Description("The reserve's size (min_nr)")
    public int reserveSize;
}

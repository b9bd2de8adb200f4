package io.blkstack.wq;

import jdk.jfr.Category;
import jdk.jfr.Description;
import jdk.jfr.Label;
import jdk.jfr.Name;
import jdk.jfr.StackTrace;

/**
 * JFR: a worker pool could not start a worker in time and called a {@code MEM_RECLAIM} queue's
 * rescuer (the mayday path, DESIGN.md section 5). Committed only while a recording enables it.
 */
@Name("blkstack.WorkqueueMayday")
@Label("Workqueue Mayday")
@Category({"blkstack", "Forward Progress"})
@Description("A worker pool sent mayday to a MEM_RECLAIM workqueue's rescuer")
@StackTrace(false)
public final class WorkqueueMaydayEvent extends jdk.jfr.Event {

    @Label("Workqueue")
    public String workqueue;

    @Label("Worker Pool")
    public String pool;
}

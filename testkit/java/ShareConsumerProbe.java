// A share consumer (KIP-932) for Foresight's tests, run as a single source file with
// Kafka's own classpath (`java -cp '<kafka lib>/*' ShareConsumerProbe.java …`), so that
// no build tool is needed.
//
//   args: <bootstrap servers> <group> <topic>
//   stdin: one word a line: `accept`, `reject` or `release` sets how the records it gets
//          from now on are acknowledged; `quit` (or the end of stdin) closes it, leaving
//          the group.
//   stdout: `ready` once subscribed, then `accepted A rejected R released L` whenever a
//           batch has been acknowledged and committed.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;

public class ShareConsumerProbe {
    private static volatile String mode = "accept";

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("group.id", args[1]);
        props.put("client.id", "share-probe");
        props.put("share.acknowledgement.mode", "explicit");
        props.put("key.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        props.put("value.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        Thread commands = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in))) {
                String line;
                while ((line = in.readLine()) != null) {
                    mode = line.trim();
                    if (mode.equals("quit")) {
                        return;
                    }
                }
            } catch (Exception e) {
                // The test went away: stop as if told to.
            }
            mode = "quit";
        });
        commands.setDaemon(true);
        commands.start();
        long accepted = 0, rejected = 0, released = 0;
        try (KafkaShareConsumer<byte[], byte[]> consumer = new KafkaShareConsumer<>(props)) {
            consumer.subscribe(List.of(args[2]));
            System.out.println("ready");
            System.out.flush();
            while (!mode.equals("quit")) {
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    continue;
                }
                String now = mode;
                AcknowledgeType type = switch (now) {
                    case "reject" -> AcknowledgeType.REJECT;
                    case "release" -> AcknowledgeType.RELEASE;
                    default -> AcknowledgeType.ACCEPT;
                };
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    consumer.acknowledge(r, type);
                }
                consumer.commitSync();
                switch (type) {
                    case REJECT -> rejected += records.count();
                    case RELEASE -> released += records.count();
                    default -> accepted += records.count();
                }
                System.out.println("accepted " + accepted + " rejected " + rejected + " released " + released);
                System.out.flush();
            }
        }
    }
}

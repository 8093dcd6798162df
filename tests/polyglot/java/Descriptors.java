// Prints the schema the generated Java classes embed: one JSON line per .proto file,
// {"file": ..., "java_package": ..., "descriptor": base64 FileDescriptorProto}, for the contract's
// files and everything they import, json_name cleared (protoc records it in the embedded
// descriptor only when it comes from a descriptor set: the same names, derived or explicit).
import com.google.gson.Gson;
import com.google.protobuf.DescriptorProtos.DescriptorProto;
import com.google.protobuf.DescriptorProtos.FieldDescriptorProto;
import com.google.protobuf.DescriptorProtos.FileDescriptorProto;
import com.google.protobuf.Descriptors.FileDescriptor;
import io.adaptivepipeline.events.v1.CommonProto;
import io.adaptivepipeline.events.v1.ConsumerGroupProto;
import io.adaptivepipeline.events.v1.EnvelopeProto;
import io.adaptivepipeline.events.v1.OperationalProto;
import io.adaptivepipeline.events.v1.PipelineLifecycleProto;
import io.adaptivepipeline.events.v1.ProcessingLifecycleProto;
import io.adaptivepipeline.events.v1.ServiceProto;
import io.adaptivepipeline.events.v1.StageProto;
import io.adaptivepipeline.events.v1.StateProto;
import java.util.ArrayDeque;
import java.util.Base64;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeMap;

public final class Descriptors {
  private Descriptors() {}

  static DescriptorProto.Builder withoutJsonNames(DescriptorProto.Builder message) {
    for (FieldDescriptorProto.Builder field : message.getFieldBuilderList()) {
      field.clearJsonName();
    }
    for (FieldDescriptorProto.Builder field : message.getExtensionBuilderList()) {
      field.clearJsonName();
    }
    for (DescriptorProto.Builder nested : message.getNestedTypeBuilderList()) {
      withoutJsonNames(nested);
    }
    return message;
  }

  static FileDescriptorProto withoutJsonNames(FileDescriptorProto proto) {
    FileDescriptorProto.Builder file = proto.toBuilder();
    for (DescriptorProto.Builder message : file.getMessageTypeBuilderList()) {
      withoutJsonNames(message);
    }
    for (FieldDescriptorProto.Builder field : file.getExtensionBuilderList()) {
      field.clearJsonName();
    }
    return file.build();
  }

  public static void main(String[] args) {
    Deque<FileDescriptor> queue = new ArrayDeque<>();
    for (FileDescriptor file : new FileDescriptor[] {
        CommonProto.getDescriptor(), ConsumerGroupProto.getDescriptor(), EnvelopeProto.getDescriptor(),
        OperationalProto.getDescriptor(), PipelineLifecycleProto.getDescriptor(),
        ProcessingLifecycleProto.getDescriptor(), ServiceProto.getDescriptor(),
        StageProto.getDescriptor(), StateProto.getDescriptor()}) {
      queue.add(file);
    }
    Map<String, FileDescriptor> files = new TreeMap<>();
    while (!queue.isEmpty()) {
      FileDescriptor file = queue.remove();
      if (files.putIfAbsent(file.getName(), file) == null) {
        queue.addAll(file.getDependencies());
      }
    }
    Gson gson = new Gson();
    for (FileDescriptor file : files.values()) {
      Map<String, String> line = new LinkedHashMap<>();
      line.put("file", file.getName());
      line.put("java_package", file.getOptions().getJavaPackage());
      line.put("descriptor",
          Base64.getEncoder().encodeToString(withoutJsonNames(file.toProto()).toByteArray()));
      System.out.println(gson.toJson(line));
    }
  }
}

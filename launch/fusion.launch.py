"""ros2 launch ros_fusion fusion.launch.py [config_file:=...] [rig_file:=...] [models_dir:=...] [use_sim_time:=true]
[backend:=onnxruntime|tensorrt|torch] [log_level:=info] [discovery_range:=LOCALHOST|SUBNET]

A real launch_ros file for full ROS 2 installs. The nodes come from
`ros_fusion.ros.node_plan.plan_nodes`, the same function `ros-fusion launch`
uses in pip mode, so the two cannot drift apart.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from ros_fusion.ros.node_plan import LaunchArgs, plan_nodes


def _nodes_from_plan(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in LaunchArgs.declared()}
    launch_args = LaunchArgs.from_strings(values)
    actions = []
    specs = plan_nodes(launch_args)
    # Same environment for every node (DDS profile, discovery range).
    if specs:
        for key, value in sorted(specs[0].environment.items()):
            actions.append(SetEnvironmentVariable(key, value))
    for spec in specs:
        actions.append(
            Node(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                namespace=spec.namespace,
                parameters=[spec.parameters],
                remappings=list(spec.remappings),
                ros_arguments=["--log-level", spec.log_level],
                additional_env=dict(spec.environment),
                output="screen",
                emulate_tty=True,
            )
        )
    return actions


def generate_launch_description():
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in LaunchArgs.declared().items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes_from_plan)])

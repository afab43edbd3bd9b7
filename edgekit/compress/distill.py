"""Knowledge distillation: loss = alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)."""
from __future__ import annotations


def make_distiller(student, teacher, temperature: float, alpha: float, probabilities: bool, one_hot: bool):
    from .._tf import keras, tf

    def logits(y):
        return tf.math.log(tf.clip_by_value(y, 1e-7, 1.0)) if probabilities else y

    class Distiller(keras.Model):
        def __init__(self):
            super().__init__()
            self.student, self.teacher = student, teacher
            self.ce = (keras.losses.CategoricalCrossentropy if one_hot else
                       keras.losses.SparseCategoricalCrossentropy)(from_logits=not probabilities)
            self.acc = (keras.metrics.CategoricalAccuracy if one_hot else
                        keras.metrics.SparseCategoricalAccuracy)(name="accuracy")
            self.loss_tracker = keras.metrics.Mean(name="loss")

        @property
        def metrics(self):
            return [self.loss_tracker, self.acc]

        def call(self, x, training=False):
            return self.student(x, training=training)

        def train_step(self, data):
            x, y = data
            t = logits(self.teacher(x, training=False)) / temperature
            with tf.GradientTape() as tape:
                out = self.student(x, training=True)
                s = logits(out) / temperature
                kl = tf.reduce_mean(tf.reduce_sum(
                    tf.nn.softmax(t) * (tf.nn.log_softmax(t) - tf.nn.log_softmax(s)), axis=-1))
                loss = alpha * self.ce(y, out) + (1 - alpha) * temperature ** 2 * kl
                if self.student.losses:
                    loss += tf.add_n(self.student.losses)
            grads = tape.gradient(loss, self.student.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
            self.loss_tracker.update_state(loss)
            self.acc.update_state(y, out)
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, data):
            x, y = data
            out = self.student(x, training=False)
            self.loss_tracker.update_state(self.ce(y, out))
            self.acc.update_state(y, out)
            return {m.name: m.result() for m in self.metrics}

    return Distiller()
